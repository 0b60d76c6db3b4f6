"""MinHash (C++) and dedup building blocks: Jaccard estimates, (bands, rows) choice, buckets, union-find."""
import os

import numpy as np
import pytest

from megasnow.curate.dedup import bucket_edges, connected_components, exact_groups, near_clusters
from megasnow.curate.minhash import (MinHasher, estimated_jaccard, jaccard, optimal_param, shingle_set,
                                     sorted_intersection_size)
from tests.conftest import require_anchor
from tests.curate.corpus import near_copy, stdlib_file


def test_signatures_deterministic_and_thread_independent():
    texts = [stdlib_file(f) for f in ["csv.py", "shlex.py", "glob.py", "fnmatch.py"]] + ["tiny text", ""]
    h = MinHasher(256, 5, seed=7)
    sig1, n1 = h.signatures(texts, threads=1)
    sig2, n2 = MinHasher(256, 5, seed=7).signatures(texts, threads=3)
    assert sig1.shape == (6, 256) and sig1.dtype == np.uint32
    np.testing.assert_array_equal(sig1, sig2)
    np.testing.assert_array_equal(n1, n2)
    assert n1[4] == 1 and n1[5] == 0  # a 2-word text is one shingle; an empty one has none
    assert (sig1[5] == 0xFFFFFFFF).all()
    assert not np.array_equal(MinHasher(256, 5, seed=8).signatures(texts[:1])[0], sig1[:1])


def test_shingles_ignore_case_whitespace_and_punctuation_but_not_word_order():
    a = shingle_set("def f(x):\n    return x + 1  # one two three")
    assert np.array_equal(a, shingle_set("DEF f( x ):\treturn x+1 ;; one two three"))
    assert not np.array_equal(a, shingle_set("def f(x): return 1 + x one two three"))
    assert len(shingle_set("a b c d e f g")) == 3


def test_estimate_tracks_true_jaccard():
    base = stdlib_file("textwrap.py")
    lines = base.split("\n")
    h = MinHasher(256, 5, seed=1)
    errors = []
    for keep in (1.0, 0.9, 0.7, 0.5, 0.3):
        variant = "\n".join(l if (i * 7919) % 100 < keep * 100 else l[::-1] for i, l in enumerate(lines))
        true = jaccard(shingle_set(base), shingle_set(variant))
        sig, _ = h.signatures([base, variant])
        errors.append(abs(estimated_jaccard(sig[0], sig[1]) - true))
    # standard error of a 256-permutation estimate is <= 0.031; allow 3 sigma
    assert max(errors) < 0.095, errors


def test_optimal_param_matches_datasketch():
    _optimal_param = require_anchor("datasketch.lsh", "datasketch")._optimal_param
    for threshold, perms in [(0.7, 256), (0.85, 256), (0.5, 128)]:
        assert optimal_param(threshold, perms) == _optimal_param(threshold, perms, 0.5, 0.5)
    assert optimal_param(0.7, 256) == (25, 10)
    with pytest.raises(ValueError, match="threshold"):
        optimal_param(1.5, 256)


def test_band_hashes_collide_only_on_equal_bands():
    sig = np.arange(4 * 8, dtype=np.uint32).reshape(4, 8)
    sig[1] = sig[0]
    sig[2, :4] = sig[0, :4]
    bands = MinHasher.band_hashes(sig, 2, 4)
    assert bands.shape == (4, 2)
    assert bands[0, 0] == bands[1, 0] == bands[2, 0] and bands[0, 1] == bands[1, 1] != bands[2, 1]
    assert bands[3, 0] != bands[0, 0]
    assert len({bands[0, 0], bands[0, 1]}) == 2  # the band index is mixed in
    with pytest.raises(ValueError, match="bands"):
        MinHasher.band_hashes(sig, 3, 4)


def test_near_duplicate_found_by_lsh_and_unrelated_not():
    base = stdlib_file("bisect.py") + stdlib_file("heapq.py")
    texts = [base, near_copy(base), stdlib_file("csv.py"), stdlib_file("shlex.py")]
    h = MinHasher(256, 5, seed=42)
    sig, _ = h.signatures(texts)
    bands = h.band_hashes(sig, 25, 10)
    edges = np.concatenate([bucket_edges(bands[:, j].copy(), np.arange(4)) for j in range(25)])
    assert {tuple(sorted(e)) for e in edges.tolist()} == {(0, 1)}


def test_bucket_edges_and_components():
    h = np.array([5, 7, 5, 9, 7, 5], dtype=np.uint64)
    edges = bucket_edges(h, np.array([0, 1, 2, 3, 4, 5]))
    assert {tuple(e) for e in edges.tolist()} == {(0, 2), (0, 5), (1, 4)}
    assert len(bucket_edges(h, np.array([0, 1, 3]))) == 0  # only candidates take part
    labels = connected_components(8, np.array([[6, 7], [2, 6], [0, 3], [3, 1], [7, 5]]))
    assert labels.tolist() == [0, 0, 2, 0, 4, 2, 2, 2]


def test_keepers_prefer_stars_then_smallest_index():
    hashes = np.array([1, 2, 1, 1, 2, 3], dtype=np.uint64)
    stars = np.array([5, -1, 9, 9, -1, 0])
    removed, clusters = exact_groups(hashes, stars)
    assert removed.tolist() == [True, False, False, True, True, False]
    assert sorted(clusters) == [(1, [4]), (2, [0, 3])]
    edges = np.array([[0, 1], [1, 2], [4, 5]])
    removed, clusters = near_clusters(6, edges, np.array([1, 7, 3, 0, 2, 2]), np.zeros(6, dtype=bool))
    assert sorted(clusters) == [(1, [0, 2]), (4, [5])]
    already = np.zeros(6, dtype=bool)
    already[1] = True  # removed by exact dedup earlier: cannot be the keeper any more
    removed, clusters = near_clusters(6, edges, np.array([1, 7, 3, 0, 2, 2]), already)
    assert sorted(clusters) == [(2, [0]), (4, [5])]


def test_sorted_intersection_size_equals_numpy():
    rng = np.random.default_rng(0)
    for n, m in [(0, 5), (7, 0), (50, 3000), (2000, 2000), (1, 1)]:
        a = np.unique(rng.integers(0, 5000, n, dtype=np.uint64))
        b = np.unique(rng.integers(0, 5000, m, dtype=np.uint64))
        assert sorted_intersection_size(a, b) == sorted_intersection_size(b, a) == np.intersect1d(a, b).size


def test_verify_stages_keep_only_pairs_at_or_above_threshold(tmp_path):
    """merge_candidates -> shingle_shard per shard -> verify_pairs over two chunks of pairs, from work/ files."""
    import orjson

    from megasnow.config import load_config, to_dict
    from megasnow.curate.config import CurateConfig
    from megasnow.curate.near_stages import merge_candidates, shingle_shard, verify_pairs
    from megasnow.curate.work import prepare_paths

    work = str(tmp_path)
    base = stdlib_file("bisect.py") + stdlib_file("heapq.py")
    half = "\n".join(l[::-1] if i % 2 else l for i, l in enumerate(base.split("\n")))
    shards = {"00000": [base, stdlib_file("csv.py")], "00001": [near_copy(base), half, stdlib_file("glob.py")]}
    for name, texts in shards.items():
        path = prepare_paths(work, name)["records"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.writelines(orjson.dumps({"content": t}) + b"\n" for t in texts)
    os.makedirs(os.path.join(work, "edges"))  # two band groups' pairs, overlapping
    np.save(os.path.join(work, "edges", "a.npy"), np.array([[0, 2], [0, 3]]))
    np.save(os.path.join(work, "edges", "b.npy"), np.array([[1, 3], [0, 2]]))
    cfg = to_dict(load_config(CurateConfig))
    assert merge_candidates({"work": work}) == {"candidate_pairs": 3}
    for name, offset, count in [("00000", 0, 2), ("00001", 2, 3)]:
        shingle_shard({"work": work, "cfg": cfg, "shard": name, "offset": offset, "count": count})
    common = {"work": work, "cfg": cfg, "shards": ["00000", "00001"], "offsets": [0, 2], "total": 5}
    kept = [verify_pairs({**common, "start": 0, "stop": 2, "key": "p0"}),
            verify_pairs({**common, "start": 2, "stop": 3, "key": "p1"})]
    assert kept == [{"pairs": 2, "kept": 1}, {"pairs": 1, "kept": 0}]
    mask = np.concatenate([np.load(os.path.join(work, "verified", k + ".npy")) for k in ("p0", "p1")])
    pairs = np.load(os.path.join(work, "candidates.npy"))
    true = {(a, b): jaccard(shingle_set(x), shingle_set(y)) for (a, b), (x, y) in
            {(0, 2): (base, near_copy(base)), (0, 3): (base, half)}.items()}
    assert true[(0, 2)] > 0.95 and true[(0, 3)] < 0.5
    assert pairs[mask].tolist() == [[0, 2]]
