"""Duplicates among synthetic outputs and against a phase-1/2 reference corpus, with megasnow.curate's machinery:
content hashes (exact), MinHash signatures + LSH band buckets + union-find (near), true shingle Jaccard checks.

Reference documents are split into their files (curated documents concatenate a repository's files), since a
synthetic output is one file. Among outputs the earliest request is kept (curate's rule with no stars).
"""
import functools

import numpy as np

from megasnow.curate.dedup import bucket_edges, near_clusters
from megasnow.curate.minhash import MinHasher, jaccard, optimal_param, shingle_set
from megasnow.curate.stages import content_hash
from megasnow.synth.seeds import split_document
from megasnow.utils.records import read_shards


@functools.lru_cache(maxsize=8)
def bands_rows(threshold, num_perm, fp_weight, fn_weight):
    return optimal_param(threshold, num_perm, fp_weight, fn_weight)


def lsh_params(cfg):
    """(bands, rows) of a curate NearDedupConfig (optimal_param when not set, as curation does)."""
    if cfg.bands and cfg.rows:
        return cfg.bands, cfg.rows
    return bands_rows(cfg.threshold, cfg.num_perm, cfg.false_positive_weight, cfg.false_negative_weight)


def exact_duplicates(texts):
    """bool [n]: True for every text equal to an earlier one."""
    seen, removed = set(), np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        h = content_hash(t, False)
        removed[i] = h in seen
        seen.add(h)
    return removed


def _band_matrix(texts, cfg, hasher, bands, rows):
    """(uint64 [n, bands] band hashes, bool [n] has words)."""
    if not texts:
        return np.zeros((0, bands), dtype=np.uint64), np.zeros(0, dtype=bool)
    parts, has = [], []
    for a in range(0, len(texts), cfg.batch_size):
        sig, cnt = hasher.signatures(texts[a:a + cfg.batch_size], threads=cfg.threads)
        parts.append(hasher.band_hashes(sig, bands, rows))
        has.append(cnt > 0)
    return np.concatenate(parts), np.concatenate(has)


def near_duplicates(texts, cfg, already_removed=None):
    """bool [n]: True for texts in a near-duplicate cluster (MinHash LSH, Jaccard >= cfg.threshold when
    cfg.verify_jaccard) that are not the cluster's earliest member; `already_removed` texts take no part."""
    n = len(texts)
    already = np.zeros(n, dtype=bool) if already_removed is None else np.asarray(already_removed, dtype=bool)
    bands, rows = lsh_params(cfg)
    hasher = MinHasher(cfg.num_perm, cfg.ngram, cfg.seed)
    band, has = _band_matrix(texts, cfg, hasher, bands, rows)
    candidates = np.flatnonzero(has & ~already).astype(np.int64)
    edges = [bucket_edges(np.ascontiguousarray(band[:, j]), candidates) for j in range(bands)]
    edges = np.unique(np.sort(np.concatenate(edges), axis=1), axis=0) if edges else np.zeros((0, 2), np.int64)
    if cfg.verify_jaccard and len(edges):
        sets = {}

        def shingles(i):
            if i not in sets:
                sets[i] = shingle_set(texts[i], cfg.ngram)
            return sets[i]

        keep = np.array([jaccard(shingles(a), shingles(b)) >= cfg.threshold for a, b in edges.tolist()], bool)
        edges = edges[keep]
    removed, _ = near_clusters(n, edges.reshape(-1, 2), np.zeros(n, dtype=np.int64), already)
    return removed


class ReferenceIndex:
    """Exact hashes and LSH band hashes of every file of a reference corpus (phase-1/2 documents).

    Memory: 8 bytes per file for hashes plus 16 bytes per file and band for the LSH index.
    """

    def __init__(self, inputs, text_field, cfg, report=None, on_damaged=None):
        self.inputs, self.text_field, self.cfg = inputs, text_field, cfg
        self.bands, self.rows = lsh_params(cfg)
        self.hasher = MinHasher(cfg.num_perm, cfg.ngram, cfg.seed)
        hashes, band_parts, batch, self.files = [], [], [], 0

        def flush():
            band, has = _band_matrix(batch, cfg, self.hasher, self.bands, self.rows)
            band_parts.append(np.where(has[:, None], band, np.uint64(0)))  # files with no words never match
            batch.clear()

        for content in self._files(report, on_damaged):
            hashes.append(content_hash(content, False))
            batch.append(content)
            self.files += 1
            if len(batch) >= cfg.batch_size:
                flush()
        if batch:
            flush()
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint64))
        band = np.concatenate(band_parts) if band_parts else np.zeros((0, self.bands), dtype=np.uint64)
        self.band_keys, self.band_owners = [], []
        for j in range(self.bands):
            order = np.argsort(band[:, j], kind="stable")
            self.band_keys.append(band[order, j])
            self.band_owners.append(order.astype(np.int64))

    def _files(self, report=None, on_damaged=None):
        """Every non-blank file of the reference documents, in a fixed order (index = position here)."""
        for _, _, rec in read_shards(self.inputs, report, on_damaged=on_damaged):
            text = rec.get(self.text_field)
            if isinstance(text, str):
                for _, content in split_document(text):
                    if content.strip():
                        yield content

    def exact_matches(self, texts):
        """bool [n]: text equal to a reference file."""
        if not len(self.hashes):
            return np.zeros(len(texts), dtype=bool)
        h = np.asarray([content_hash(t, False) for t in texts], dtype=np.uint64)
        idx = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        return self.hashes[idx] == h

    def near_matches(self, texts, skip=None):
        """bool [n]: text whose shingle Jaccard with some reference file is >= threshold (LSH candidates, checked
        exactly when cfg.verify_jaccard)."""
        n = len(texts)
        skip = np.zeros(n, dtype=bool) if skip is None else skip
        found = np.zeros(n, dtype=bool)
        if not self.files or not n:
            return found
        band, has = _band_matrix(texts, self.cfg, self.hasher, self.bands, self.rows)
        pairs = set()
        for j in range(self.bands):
            keys, owners = self.band_keys[j], self.band_owners[j]
            lo = np.searchsorted(keys, band[:, j], side="left")
            hi = np.searchsorted(keys, band[:, j], side="right")
            for i in np.flatnonzero((hi > lo) & has & ~skip).tolist():
                pairs.update((i, int(f)) for f in owners[lo[i]:hi[i]].tolist())
        if not pairs:
            return found
        if not self.cfg.verify_jaccard:
            found[[i for i, _ in pairs]] = True
            return found
        wanted = {f for _, f in pairs}
        ref_sets = {}
        for f, content in enumerate(self._files()):
            if f in wanted:
                ref_sets[f] = shingle_set(content, self.cfg.ngram)
        out_sets = {}
        for i, f in sorted(pairs):
            if found[i]:
                continue
            if i not in out_sets:
                out_sets[i] = shingle_set(texts[i], self.cfg.ngram)
            if jaccard(out_sets[i], ref_sets[f]) >= self.cfg.threshold:
                found[i] = True
        return found
