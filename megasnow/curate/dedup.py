"""Deduplication over the whole corpus: exact (content hash groups) and near (LSH band buckets -> union-find).

Every function works on global document indices (shard offset + row), keeps one document per group or cluster
(most stars first, then the smallest index) and returns the groups so they can be reported.
"""
import numpy as np


def keep_best(groups, stars):
    """For integer group labels per member, the member to keep in each group: most stars, then smallest index.

    groups: int64 [m] label of each member; returns (order, first) where members sorted by (label, -stars, index)
    are `order` and `first[i]` says whether order[i] is its group's keeper.
    """
    idx = np.arange(len(groups))
    order = np.lexsort((idx, -stars, groups))
    g = groups[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return order, first


def exact_groups(hashes, stars):
    """(removed bool [n], clusters [(kept, [removed...])]) for documents sharing a content hash."""
    n = len(hashes)
    removed = np.zeros(n, dtype=bool)
    order, first = keep_best(hashes, stars)
    removed[order[~first]] = True
    clusters = []
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(order))
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - s > 1:
            clusters.append((int(order[s]), sorted(order[s + 1:e].tolist())))
    return removed, clusters


def bucket_edges(band_hashes, candidates):
    """Edges (first, other) joining the candidate documents that share a band hash.

    band_hashes: uint64 [n] one band of every document; candidates: int64 indices taking part.
    Each bucket gives a star of edges from its first member, which keeps its connected component.
    """
    if len(candidates) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    h = band_hashes[candidates]
    order = np.argsort(h, kind="stable")
    hs = h[order]
    new_run = np.ones(len(hs), dtype=bool)
    new_run[1:] = hs[1:] != hs[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(hs)), 0))
    member = ~new_run
    src = candidates[order[run_start[member]]]
    dst = candidates[order[member]]
    return np.stack([src, dst], axis=1).astype(np.int64)


def connected_components(n, edges):
    """Root label (smallest member index) of every node 0..n-1 under the undirected edges [m, 2]."""
    parent = np.arange(n, dtype=np.int64)
    if len(edges) == 0:
        return parent
    u, v = edges[:, 0], edges[:, 1]
    while True:
        pu, pv = parent[u], parent[v]
        lo, hi = np.minimum(pu, pv), np.maximum(pu, pv)
        differ = lo != hi
        if not differ.any():
            return parent
        np.minimum.at(parent, hi[differ], lo[differ])  # hook roots onto smaller roots: parent[x] <= x always
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def near_clusters(n, edges, stars, already_removed):
    """(removed bool [n], clusters [(kept, [removed...])]) of the components joined by `edges`."""
    labels = connected_components(n, edges)
    members = np.unique(edges.reshape(-1)) if len(edges) else np.zeros(0, dtype=np.int64)
    members = members[~already_removed[members]]
    removed = np.zeros(n, dtype=bool)
    if len(members) == 0:
        return removed, []
    order, first = keep_best(labels[members], stars[members])
    ordered = members[order]
    removed[ordered[~first]] = True
    clusters = []
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(ordered))
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - s > 1:
            clusters.append((int(ordered[s]), sorted(ordered[s + 1:e].tolist())))
    return removed, clusters
