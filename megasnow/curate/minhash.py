"""MinHash signatures and LSH banding (C++ hot path in csrc/minhash.cpp), and the optimal (bands, rows) choice.

A shingle is a 5-gram of words (runs of [A-Za-z0-9_] or non-ASCII, ASCII-lowercased); permutation i maps a
shingle hash x to (a_i * x + b_i) mod 2^64 >> 32 with a_i odd. Signatures are uint32 [n, num_perm].
"""
import numpy as np

from megasnow import _minhash

MAX_HASH = np.uint32(0xFFFFFFFF)


class MinHasher:
    """Seeded permutations plus the C++ signature and band-hash calls."""

    def __init__(self, num_perm=256, ngram=5, seed=42):
        if num_perm < 1 or ngram < 1:
            raise ValueError(f"num_perm ({num_perm}) and ngram ({ngram}) must be >= 1")
        rng = np.random.Generator(np.random.PCG64(seed))
        self.num_perm, self.ngram = num_perm, ngram
        self.a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**64 - 1, size=num_perm, dtype=np.uint64, endpoint=True)

    def signatures(self, texts, threads=1):
        """(uint32 [n, num_perm] signatures, int64 [n] distinct shingle counts; 0 means no words at all)."""
        return _minhash.signatures(list(texts), self.a, self.b, self.ngram, threads)

    @staticmethod
    def band_hashes(sig, bands, rows):
        return _minhash.band_hashes(sig, bands, rows)


def shingle_set(text, ngram=5):
    """Sorted distinct shingle hashes of one text (the set whose Jaccard similarity MinHash estimates)."""
    return _minhash.ngram_hashes(text, ngram, True, True)


def sorted_intersection_size(set_a, set_b):
    """|A & B| of two sorted distinct arrays: binary search of the smaller in the larger (no merge sort)."""
    if len(set_a) > len(set_b):
        set_a, set_b = set_b, set_a
    if len(set_a) == 0:
        return 0
    idx = np.minimum(np.searchsorted(set_b, set_a), len(set_b) - 1)
    return int(np.count_nonzero(set_b[idx] == set_a))


def jaccard(set_a, set_b):
    """Exact Jaccard similarity of two sorted distinct hash arrays."""
    if len(set_a) == 0 and len(set_b) == 0:
        return 1.0
    inter = sorted_intersection_size(set_a, set_b)
    return inter / (len(set_a) + len(set_b) - inter)


def estimated_jaccard(sig_a, sig_b):
    return float(np.mean(sig_a == sig_b))


def _integrate(f, lo, hi, steps=1000):
    x = np.linspace(lo, hi, steps + 1)
    y = f(x)
    return float(np.sum((y[1:] + y[:-1]) * 0.5 * np.diff(x)))


def optimal_param(threshold, num_perm, false_positive_weight=0.5, false_negative_weight=0.5):
    """(bands, rows), bands * rows <= num_perm, minimising the weighted LSH error around `threshold`.

    As datasketch's `_optimal_param`: a pair of similarity s becomes a candidate with probability
    P(s) = 1 - (1 - s^r)^b; the false-positive mass is the integral of P over [0, threshold] and the
    false-negative mass the integral of 1 - P over [threshold, 1].
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best, best_err = None, float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s: 1.0 - (1.0 - s ** r) ** b, 0.0, threshold)
            fn = _integrate(lambda s: (1.0 - s ** r) ** b, threshold, 1.0)
            err = false_positive_weight * fp + false_negative_weight * fn
            if err < best_err - 1e-15:
                best, best_err = (b, r), err
    return best
