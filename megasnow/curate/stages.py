"""The per-shard and global stage functions of the curation pipeline (module-level so executors can pickle them).

Each takes one task dict (paths + the config as a dict), writes its outputs atomically and returns a small
JSON-able result (counters); pipeline.py decides which tasks still need to run.
"""
import glob
import hashlib
import json
import os

import numpy as np
import orjson

from megasnow.config import from_dict
from megasnow.curate.config import CurateConfig
from megasnow.curate.decontaminate import get_decontaminator
from megasnow.curate.dedup import bucket_edges, exact_groups, near_clusters
from megasnow.curate.documents import repo_documents
from megasnow.curate.filters import filter_reason, resolve_filter_config
from megasnow.curate.minhash import MinHasher, jaccard, shingle_set
from megasnow.curate.sources import iter_shard_files
from megasnow.curate.stats import count_in, count_out, count_removed, new_stats
from megasnow.utils.atomic import atomic_write, temporary_path

_CFG_CACHE = {}


def config_of(task):
    key = json.dumps(task["cfg"], sort_keys=True)
    if key not in _CFG_CACHE:
        _CFG_CACHE[key] = from_dict(CurateConfig, task["cfg"])
    return _CFG_CACHE[key]


def content_hash(content, normalize_whitespace):
    if normalize_whitespace:
        content = " ".join(content.split())
    return int.from_bytes(hashlib.blake2b(content.encode("utf-8"), digest_size=8).digest(), "little")


def prepare_paths(work, shard):
    base = os.path.join(work, "prepared", shard)
    return {"records": base + ".jsonl", "meta": base + ".meta.npz", "decon": base + ".decon.jsonl"}


def prepare_shard(task):
    """Ingest -> filter -> decontaminate one input shard; kept files go to work/prepared/<shard>.jsonl."""
    cfg = config_of(task)
    shard = task["shard"]
    paths = prepare_paths(task["work"], shard["name"])
    stats = new_stats()
    decon = get_decontaminator(cfg.decontamination) if cfg.decontamination.enabled else None
    hashes, stars, repos, fpaths, ids = [], [], [], [], []
    with atomic_write(paths["records"], "wb") as out, atomic_write(paths["decon"], "wb") as decon_out:
        for k, rec in enumerate(iter_shard_files(shard, cfg.source, stats)):
            lang, content = rec["lang"], rec["content"]
            nbytes = len(content.encode("utf-8"))
            rec_id = f"{shard['name']}:{k}"
            count_out(stats, "ingest", lang, nbytes)
            count_in(stats, "filter", lang, nbytes)
            if cfg.filters.enabled:
                reason = filter_reason(content, lang, rec["ext"], resolve_filter_config(cfg.filters, lang))
                if reason is not None:
                    count_removed(stats, "filter", lang, reason)
                    continue
            count_out(stats, "filter", lang, nbytes)
            count_in(stats, "decontaminate", lang, nbytes)
            if decon is not None:
                matches = decon.match(content)
                if matches:
                    for bench in sorted({m["benchmark"] for m in matches}):
                        count_removed(stats, "decontaminate", lang, bench)
                    decon_out.write(orjson.dumps({"id": rec_id, "repo": rec["repo"], "path": rec["path"],
                                                  "lang": lang, "matches": matches}) + b"\n")
                    continue
            count_out(stats, "decontaminate", lang, nbytes)
            out.write(orjson.dumps({"id": rec_id, "repo": rec["repo"], "path": rec["path"], "lang": lang,
                                    "stars": rec["stars"], "content": content}) + b"\n")
            hashes.append(content_hash(content, cfg.exact_dedup.normalize_whitespace))
            stars.append(-1 if rec["stars"] is None else rec["stars"])
            repos.append(rec["repo"])
            fpaths.append(rec["path"])
            ids.append(rec_id)
    with atomic_write(paths["meta"], "wb") as f:
        np.savez(f, hash=np.array(hashes, dtype=np.uint64), stars=np.array(stars, dtype=np.int64),
                 repo=np.array(repos, dtype=str), path=np.array(fpaths, dtype=str), id=np.array(ids, dtype=str))
    stats["kept"] = len(ids)
    stats["kept_bytes_by_lang"] = _bytes_by_lang(stats)
    return stats


def _bytes_by_lang(stats):
    return {lang: c["bytes_out"] for lang, c in stats["stages"].get("decontaminate", {}).items()}


def iter_prepared(work, shard_name):
    with open(prepare_paths(work, shard_name)["records"], "rb") as f:
        for line in f:
            yield orjson.loads(line)


def signature_shard(task):
    """MinHash + LSH band hashes of one prepared shard -> work/signatures/<shard>.npz (bands-major)."""
    cfg = config_of(task)
    nd = cfg.near_dedup
    hasher = MinHasher(nd.num_perm, nd.ngram, nd.seed)
    bands, rows = task["bands"], task["rows"]
    parts, counts, batch = [], [], []

    def flush():
        sig, cnt = hasher.signatures(batch, threads=nd.threads)
        parts.append(hasher.band_hashes(sig, bands, rows))
        counts.append(cnt)
        batch.clear()

    for rec in iter_prepared(task["work"], task["shard"]):
        batch.append(rec["content"])
        if len(batch) >= nd.batch_size:
            flush()
    if batch:
        flush()
    band_arr = np.concatenate(parts) if parts else np.zeros((0, bands), dtype=np.uint64)
    cnt = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    out = os.path.join(task["work"], "signatures", task["shard"] + ".npz")
    with atomic_write(out, "wb") as f:
        np.savez(f, bands=np.ascontiguousarray(band_arr.T), has_shingles=cnt > 0)
    return {"documents": int(len(cnt))}


def _load_meta(work, shard_names, key):
    return np.concatenate([np.load(prepare_paths(work, s)["meta"])[key] for s in shard_names]) \
        if shard_names else np.zeros(0)


def exact_dedup(task):
    """Groups of identical content hashes over all shards -> work/exact.npz (removed mask) + clusters."""
    work, shards = task["work"], task["shards"]
    hashes = _load_meta(work, shards, "hash").astype(np.uint64)
    stars = _load_meta(work, shards, "stars").astype(np.int64)
    removed, clusters = exact_groups(hashes, stars)
    with atomic_write(os.path.join(work, "exact.npz"), "wb") as f:
        np.savez(f, removed=removed)
    with atomic_write(os.path.join(work, "exact_clusters.json"), "wb") as f:
        f.write(orjson.dumps(clusters))
    return {"removed": int(removed.sum()), "clusters": len(clusters)}


def band_edges(task):
    """Candidate pairs from LSH buckets of bands [start, stop) over all shards -> work/edges/<key>.npy."""
    work, shards = task["work"], task["shards"]
    exact_removed = np.load(os.path.join(work, "exact.npz"))["removed"]
    sig_files = [np.load(os.path.join(work, "signatures", s + ".npz")) for s in shards]
    ok = np.concatenate([f["has_shingles"] for f in sig_files]) & ~exact_removed
    candidates = np.flatnonzero(ok).astype(np.int64)
    all_bands = [f["bands"] for f in sig_files]
    edges = []
    for j in range(task["start"], task["stop"]):
        column = np.concatenate([b[j] for b in all_bands])
        edges.append(bucket_edges(column, candidates))
    edges = np.unique(np.sort(np.concatenate(edges), axis=1), axis=0) if edges else np.zeros((0, 2), np.int64)
    with atomic_write(os.path.join(work, "edges", task["key"] + ".npy"), "wb") as f:
        np.save(f, edges)
    return {"edges": int(len(edges))}


def verify_edges(work, shards, offsets, edges, ngram, threshold):
    """Keep the candidate pairs whose true shingle-set Jaccard similarity reaches the threshold."""
    needed = set(np.unique(edges).tolist())
    sets = {}
    for s, off in zip(shards, offsets):
        for row, rec in enumerate(iter_prepared(work, s)):
            if off + row in needed:
                sets[off + row] = shingle_set(rec["content"], ngram)
    keep = [jaccard(sets[a], sets[b]) >= threshold for a, b in edges.tolist()]
    return edges[np.array(keep, dtype=bool)] if len(edges) else edges


def cluster_near(task):
    """Union-find over all candidate edges -> work/near.npz (removed mask) + clusters."""
    cfg = config_of(task)
    work, shards = task["work"], task["shards"]
    files = sorted(glob.glob(os.path.join(work, "edges", "*.npy")))
    edges = [np.load(f) for f in files]
    edges = np.unique(np.concatenate(edges), axis=0) if edges else np.zeros((0, 2), np.int64)
    edges = edges.reshape(-1, 2).astype(np.int64)
    candidates = len(edges)
    if cfg.near_dedup.verify_jaccard and len(edges):
        edges = verify_edges(work, shards, task["offsets"], edges, cfg.near_dedup.ngram, cfg.near_dedup.threshold)
    stars = _load_meta(work, shards, "stars").astype(np.int64)
    exact_removed = np.load(os.path.join(work, "exact.npz"))["removed"]
    removed, clusters = near_clusters(len(stars), edges, stars, exact_removed)
    with atomic_write(os.path.join(work, "near.npz"), "wb") as f:
        np.savez(f, removed=removed)
    with atomic_write(os.path.join(work, "near_clusters.json"), "wb") as f:
        f.write(orjson.dumps(clusters))
    return {"candidate_pairs": candidates, "verified_pairs": int(len(edges)), "removed": int(removed.sum()),
            "clusters": len(clusters)}


def partition_of(repo, partitions):
    return int.from_bytes(hashlib.blake2b(repo.encode("utf-8"), digest_size=8).digest(), "little") % partitions


def route_shard(task):
    """Drop deduplicated files of one shard; route survivors to work/grouped/<lang>/<partition>/<shard>.jsonl."""
    work, shard, offset = task["work"], task["shard"], task["offset"]
    removed_exact = _load_mask(work, "exact.npz")
    removed_near = _load_mask(work, "near.npz")
    stats = new_stats()
    writers = {}
    try:
        for row, rec in enumerate(iter_prepared(work, shard)):
            g = offset + row
            lang = rec["lang"]
            nbytes = len(rec["content"].encode("utf-8"))
            count_in(stats, "exact_dedup", lang, nbytes)
            if removed_exact is not None and removed_exact[g]:
                count_removed(stats, "exact_dedup", lang, "exact_duplicate")
                continue
            count_out(stats, "exact_dedup", lang, nbytes)
            count_in(stats, "near_dedup", lang, nbytes)
            if removed_near is not None and removed_near[g]:
                count_removed(stats, "near_dedup", lang, "near_duplicate")
                continue
            count_out(stats, "near_dedup", lang, nbytes)
            part = partition_of(rec["repo"], task["partitions"][lang])
            key = (lang, part)
            if key not in writers:
                final = os.path.join(work, "grouped", lang, f"{part:05d}", shard + ".jsonl")
                tmp = temporary_path(final)
                writers[key] = (open(tmp, "wb"), tmp, final)
            writers[key][0].write(orjson.dumps(rec) + b"\n")
        for f, tmp, final in writers.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, final)
    finally:
        for f, tmp, _ in writers.values():
            if not f.closed:
                f.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
    return stats


def _load_mask(work, name):
    path = os.path.join(work, name)
    return np.load(path)["removed"] if os.path.exists(path) else None


def build_documents(task):
    """All files of one (language, partition), grouped by repo -> <output>/documents/<lang>-<part>.jsonl."""
    cfg = config_of(task)
    lang, part = task["lang"], task["partition"]
    by_repo = {}
    for path in sorted(glob.glob(os.path.join(task["work"], "grouped", lang, f"{part:05d}", "*.jsonl"))):
        with open(path, "rb") as f:
            for line in f:
                rec = orjson.loads(line)
                by_repo.setdefault(rec["repo"], []).append(rec)
    stats = new_stats()
    out_path = os.path.join(task["output"], "documents", f"{lang}-{part:05d}.jsonl")
    with atomic_write(out_path, "wb") as out:
        for repo in sorted(by_repo):
            files = by_repo[repo]
            for f in files:
                count_in(stats, "documents", lang, len(f["content"].encode("utf-8")))
            for doc in repo_documents(files, lang, repo, cfg.documents.seed, cfg.documents.max_chars):
                count_out(stats, "documents", lang, len(doc["text"].encode("utf-8")))
                out.write(orjson.dumps(doc) + b"\n")
    return stats


STAGE_FUNCTIONS = {f.__name__: f for f in (prepare_shard, signature_shard, exact_dedup, band_edges, cluster_near,
                                           route_shard, build_documents)}
