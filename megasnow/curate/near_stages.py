"""Near-dedup stage functions: MinHash signatures -> LSH band buckets -> candidate pairs -> true-Jaccard check
-> clusters. Every task works from files under work/ so that none holds more than one band or one chunk of pairs.
"""
import glob
import os

import numpy as np
import orjson

from megasnow.curate.dedup import bucket_edges, near_clusters
from megasnow.curate.minhash import MinHasher, jaccard, shingle_set
from megasnow.curate.work import config_of, iter_prepared_lines, load_meta
from megasnow.utils.atomic import atomic_write

VERIFY_PAIRS_PER_TASK = 1 << 21  # candidate pairs per verify task (a fixed split: never depends on the workers)


def _save(path, array):
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def signature_paths(work, shard):
    base = os.path.join(work, "signatures", shard)
    return {"bands": base + ".bands.npy", "has": base + ".has.npy"}


def signature_shard(task):
    """MinHash + LSH band hashes of one prepared shard -> work/signatures/<shard>.bands.npy (band-major)."""
    nd = config_of(task).near_dedup
    hasher = MinHasher(nd.num_perm, nd.ngram, nd.seed)
    bands, rows = task["bands"], task["rows"]
    parts, counts, batch = [], [], []

    def flush():
        sig, cnt = hasher.signatures(batch, threads=nd.threads)
        parts.append(hasher.band_hashes(sig, bands, rows))
        counts.append(cnt)
        batch.clear()

    for line in iter_prepared_lines(task["work"], task["shard"]):
        batch.append(orjson.loads(line)["content"])
        if len(batch) >= nd.batch_size:
            flush()
    if batch:
        flush()
    band_arr = np.concatenate(parts) if parts else np.zeros((0, bands), dtype=np.uint64)
    cnt = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    paths = signature_paths(task["work"], task["shard"])
    # band-major, so that a bucket task reads one band of a shard as one contiguous slice of a memory map
    _save(paths["bands"], np.ascontiguousarray(band_arr.T))
    _save(paths["has"], cnt > 0)
    return {"documents": int(len(cnt))}


def band_edges(task):
    """Candidate pairs from LSH buckets of bands [start, stop) over all shards -> work/edges/<key>.npy.

    One band is in memory at a time: each shard's band array is memory-mapped and only row j is read.
    """
    work, shards = task["work"], task["shards"]
    exact_removed = np.load(os.path.join(work, "exact.npz"))["removed"]
    paths = [signature_paths(work, s) for s in shards]
    ok = np.concatenate([np.load(p["has"]) for p in paths]) & ~exact_removed if shards else np.zeros(0, bool)
    candidates = np.flatnonzero(ok).astype(np.int64)
    del ok
    maps = [np.load(p["bands"], mmap_mode="r") for p in paths]
    edges = []
    for j in range(task["start"], task["stop"]):
        column = np.concatenate([m[j] for m in maps]) if maps else np.zeros(0, np.uint64)
        edges.append(bucket_edges(column, candidates))
    edges = np.unique(np.sort(np.concatenate(edges), axis=1), axis=0) if edges else np.zeros((0, 2), np.int64)
    _save(os.path.join(work, "edges", task["key"] + ".npy"), edges)
    return {"edges": int(len(edges))}


def merge_candidates(task):
    """All band groups' pairs, de-duplicated and sorted -> work/candidates.npy [m, 2] and the documents in them
    -> work/candidate_docs.npy (sorted), which the shingle and verify tasks index into."""
    work = task["work"]
    edges = [np.load(f) for f in sorted(glob.glob(os.path.join(work, "edges", "*.npy")))]
    edges = np.unique(np.concatenate(edges), axis=0) if edges else np.zeros((0, 2), np.int64)
    edges = edges.reshape(-1, 2).astype(np.int64)
    _save(os.path.join(work, "candidate_docs.npy"), np.unique(edges))
    _save(os.path.join(work, "candidates.npy"), edges)
    return {"candidate_pairs": int(len(edges))}


def shingle_paths(work, shard):
    base = os.path.join(work, "shingles", shard)
    return {"hashes": base + ".hashes.npy", "offsets": base + ".offsets.npy"}


def _shard_slice(docs, lo, hi):
    """Positions [a, b) of the candidate documents with global index in [lo, hi) (docs is sorted)."""
    return int(np.searchsorted(docs, lo)), int(np.searchsorted(docs, hi))


def shingle_shard(task):
    """Shingle sets of one shard's candidate documents -> work/shingles/<shard>.{hashes,offsets}.npy.

    The sets of the shard's candidates, in global index order, are concatenated; offsets[k]..offsets[k+1] is the
    k-th. Only candidate lines are parsed. On disk this is 8 bytes per shingle of the candidate files.
    """
    work, lo, hi = task["work"], task["offset"], task["offset"] + task["count"]
    ngram = config_of(task).near_dedup.ngram
    docs = np.load(os.path.join(work, "candidate_docs.npy"), mmap_mode="r")
    a, b = _shard_slice(docs, lo, hi)
    wanted = set((np.asarray(docs[a:b]) - lo).tolist())
    sets, last = [], max(wanted, default=-1)
    for row, line in enumerate(iter_prepared_lines(work, task["shard"])):
        if row > last:
            break
        if row in wanted:
            sets.append(shingle_set(orjson.loads(line)["content"], ngram))
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sets])
    paths = shingle_paths(work, task["shard"])
    _save(paths["hashes"], np.concatenate(sets) if sets else np.zeros(0, np.uint64))
    _save(paths["offsets"], offsets)
    return {"documents": len(sets)}


def verify_pairs(task):
    """True shingle-set Jaccard of candidate pairs [start, stop) -> work/verified/<key>.npy (bool, pair kept).

    Shingle sets are read from the memory-mapped per-shard files, so memory stays small whatever the corpus.
    """
    work = task["work"]
    nd = config_of(task).near_dedup
    pairs = np.load(os.path.join(work, "candidates.npy"), mmap_mode="r")[task["start"]:task["stop"]]
    docs = np.load(os.path.join(work, "candidate_docs.npy"), mmap_mode="r")
    bounds = np.asarray(task["offsets"] + [task["total"]], dtype=np.int64)  # shard s holds [bounds[s], bounds[s+1])
    first_pos = np.searchsorted(docs, bounds[:-1])  # position in docs of each shard's first candidate
    maps = {}

    def shingles(g):
        s = int(np.searchsorted(bounds, g, side="right")) - 1
        if s not in maps:
            p = shingle_paths(work, task["shards"][s])
            maps[s] = (np.load(p["hashes"], mmap_mode="r"), np.load(p["offsets"]))
        hashes, offsets = maps[s]
        k = int(np.searchsorted(docs, g)) - int(first_pos[s])
        return hashes[offsets[k]:offsets[k + 1]]

    keep = np.zeros(len(pairs), dtype=bool)
    for i, (x, y) in enumerate(np.asarray(pairs).tolist()):
        keep[i] = jaccard(shingles(x), shingles(y)) >= nd.threshold
    _save(os.path.join(work, "verified", task["key"] + ".npy"), keep)
    return {"pairs": int(len(keep)), "kept": int(keep.sum())}


def cluster_near(task):
    """Union-find over the (verified) candidate pairs -> work/near.npz (removed mask) + near_clusters.json."""
    work, shards = task["work"], task["shards"]
    edges = np.load(os.path.join(work, "candidates.npy"))
    candidates = len(edges)
    if task["verify_keys"]:
        keep = [np.load(os.path.join(work, "verified", k + ".npy")) for k in task["verify_keys"]]
        edges = edges[np.concatenate(keep)]
    stars = load_meta(work, shards, "stars").astype(np.int64)
    exact_removed = np.load(os.path.join(work, "exact.npz"))["removed"]
    removed, clusters = near_clusters(len(stars), edges, stars, exact_removed)
    with atomic_write(os.path.join(work, "near.npz"), "wb") as f:
        np.savez(f, removed=removed)
    with atomic_write(os.path.join(work, "near_clusters.json"), "wb") as f:
        f.write(orjson.dumps(clusters))
    return {"candidate_pairs": candidates, "verified_pairs": int(len(edges)), "removed": int(removed.sum()),
            "clusters": len(clusters)}
