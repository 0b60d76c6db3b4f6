"""The stage functions of the curation pipeline (module-level so executors can pickle them): prepare, exact dedup,
route and documents here, the near-dedup ones in near_stages.py; STAGE_FUNCTIONS names them all.

Each takes one task dict (paths + the config as a dict), writes its outputs atomically and returns a small
JSON-able result (counters); pipeline.py decides which tasks still need to run.
"""
import glob
import hashlib
import logging
import os

import numpy as np
import orjson

from megasnow.curate.decontaminate import get_decontaminator
from megasnow.curate.dedup import exact_groups
from megasnow.curate.documents import repo_documents
from megasnow.curate.filters import filter_reason, resolve_filter_config
from megasnow.curate.near_stages import (band_edges, cluster_near, merge_candidates, shingle_shard,
                                         signature_shard, verify_pairs)
from megasnow.curate.sources import iter_shard_files
from megasnow.curate.stats import count_in, count_out, count_removed, new_stats
from megasnow.curate.summary import Heartbeat
from megasnow.curate.work import READING, config_of, iter_prepared_lines, load_meta, prepare_paths, reading
from megasnow.utils.atomic import atomic_write, temporary_path
from megasnow.utils.records import ShardReadError

log = logging.getLogger(__name__)
READ_ATTEMPTS = 3  # reads of an input shard hit by a possibly transient I/O error (EIO, ESTALE...)


def content_hash(content, normalize_whitespace):
    if normalize_whitespace:
        content = " ".join(content.split())
    return int.from_bytes(hashlib.blake2b(content.encode("utf-8"), digest_size=8).digest(), "little")


def prepare_shard(task):
    """Ingest -> filter -> decontaminate one input shard; kept files go to work/prepared/<shard>.jsonl.

    An I/O error that may be transient (ShardReadError.transient) reads the shard again from the start, up to
    READ_ATTEMPTS times; after that (or at once for corrupt data) the shard is kept up to the damage and reported.
    """
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return _prepare_shard_once(task, raise_transient=attempt < READ_ATTEMPTS)
        except ShardReadError as e:  # the atomic writers discarded this attempt's partial outputs
            log.warning("reading %s failed (attempt %d/%d), retrying: %s", e.path, attempt, READ_ATTEMPTS, e.error)


def _prepare_shard_once(task, raise_transient):
    cfg = config_of(task)
    shard = task["shard"]
    paths = prepare_paths(task["work"], shard["name"])
    stats = new_stats()
    decon = get_decontaminator(cfg.decontamination) if cfg.decontamination.enabled else None
    hashes, stars, repos, fpaths, ids = [], [], [], [], []
    heartbeat, read_bytes = Heartbeat(f"prepare shard {shard['name']}", cfg.progress_interval_s), 0
    with atomic_write(paths["records"], "wb") as out, atomic_write(paths["decon"], "wb") as decon_out:
        for k, rec in enumerate(iter_shard_files(shard, cfg.source, stats, raise_transient)):
            lang, content = rec["lang"], rec["content"]
            nbytes = len(content.encode("utf-8"))
            read_bytes += nbytes
            heartbeat.beat(k + 1, read_bytes, READING["path"])
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


def exact_dedup(task):
    """Groups of identical content hashes over all shards -> work/exact.npz (removed mask) + clusters."""
    work, shards = task["work"], task["shards"]
    hashes = load_meta(work, shards, "hash").astype(np.uint64)
    stars = load_meta(work, shards, "stars").astype(np.int64)
    removed, clusters = exact_groups(hashes, stars)
    with atomic_write(os.path.join(work, "exact.npz"), "wb") as f:
        np.savez(f, removed=removed)
    with atomic_write(os.path.join(work, "exact_clusters.json"), "wb") as f:
        f.write(orjson.dumps(clusters))
    return {"removed": int(removed.sum()), "clusters": len(clusters)}


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
        for row, line in enumerate(iter_prepared_lines(work, shard)):
            rec = orjson.loads(line)
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
        reading(path)
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


STAGE_FUNCTIONS = {f.__name__: f for f in (prepare_shard, exact_dedup, signature_shard, band_edges, merge_candidates,
                                           shingle_shard, verify_pairs, cluster_near, route_shard, build_documents)}
