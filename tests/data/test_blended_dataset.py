"""Blends: largest-deficit proportions, exact repetition counts, contents, determinism and refused inputs."""
import pickle

import numpy as np
import pytest

from megasnow import _dataset_helpers
from megasnow.data.blended_dataset import BlendedDataset, BlendEntry, build_gpt_dataset
from megasnow.data.gpt_dataset import GPTDataset, GPTDatasetError
from tests.conftest import anchor_missing
from tests.data.test_gpt_dataset import megatron_helpers, write_documents


@pytest.fixture
def three(tmp_path):
    """Three datasets whose tokens tell them apart: dataset k uses token ids [1000k, 1000k + 1000)."""
    rng = np.random.default_rng(7)
    prefixes, docs = [], []
    for k, n_docs in enumerate((40, 25, 60)):
        d = [[list(1000 * k + rng.integers(0, 1000, rng.integers(1, 30)))] for _ in range(n_docs)]
        prefixes.append(write_documents(tmp_path / f"ds{k}", d))
        docs.append(d)
    return prefixes, docs


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.2, 0.3, 0.5], [0.01, 0.99], [3.0, 1.0, 1.0, 2.0, 0.5]])
def test_largest_deficit_counts_stay_within_one_of_weight_times_n(weights):
    w = np.asarray(weights) / np.sum(weights)
    which, local = _dataset_helpers.build_blending_indices(w, 5000)
    onehot = np.eye(len(w), dtype=np.int64)[which]
    counts = np.cumsum(onehot, axis=0)  # counts[n-1, d]: samples of d among the first n
    n = np.arange(1, 5001)[:, None]
    assert np.abs(counts - w[None, :] * n).max() <= 1.0
    for d in range(len(w)):  # each dataset's samples are taken in order 0, 1, 2, ...
        assert local[which == d].tolist() == list(range(int((which == d).sum())))


def test_blending_matches_megatron():
    megatron = megatron_helpers() or anchor_missing("megatron-core", "its compiled helpers_cpp was not found")
    rng = np.random.default_rng(3)
    for _ in range(20):
        k = int(rng.integers(1, 6))
        w = rng.random(k) + 0.01
        w /= w.sum()
        size = int(rng.integers(1, 3000))
        which, local = _dataset_helpers.build_blending_indices(w, size)
        m_which, m_local = np.zeros(size, np.int16), np.zeros(size, np.int64)
        megatron.build_blending_indices(m_which, m_local, w, k, size, False)
        np.testing.assert_array_equal(which, m_which)
        np.testing.assert_array_equal(local, m_local)
        sizes = rng.integers(1, 400, k).astype(np.int64)
        which, local = _dataset_helpers.build_exhaustive_blending_indices(sizes)
        m_which, m_local = np.zeros(sizes.sum(), np.int16), np.zeros(sizes.sum(), np.int64)
        megatron.build_exhaustive_blending_indices(m_which, m_local, sizes, k)
        np.testing.assert_array_equal(which, m_which)
        np.testing.assert_array_equal(local, m_local)


def test_weighted_blend_with_a_dataset_shorter_than_one_sample(tmp_path, three):
    """A weighted blend with a dataset of fewer tokens than one sample (the quickstart's phase 3 with 2 kept
    synthetic files of 210 tokens and seq_len 256) builds: that dataset's samples repeat its tokens over epochs."""
    prefixes, _ = three
    tiny = write_documents(tmp_path / "tiny", [[[5000 + i for i in range(7)]], [[5100 + i for i in range(5)]]])
    ds = build_gpt_dataset([BlendEntry(prefixes[0], 0.6), BlendEntry(tiny, 0.4)], 50, 16, 0, cache_dir=tmp_path / "c")
    from_tiny = [ds[i] for i in range(len(ds)) if ds.dataset_index[i] == 1]
    assert len(ds) == 50 and len(from_tiny) == 20
    for sample in from_tiny:  # 17 consecutive tokens of the tiny set's epochs: documents whole and in order
        assert sample.shape == (17,)
        for a, b in zip(sample[:-1].tolist(), sample[1:].tolist()):
            assert b == a + 1 or (a in (5006, 5104) and b in (5000, 5100)), sample


def test_weighted_blend_contents_and_proportions(tmp_path, three):
    prefixes, _ = three
    weights = [2.0, 1.0, 1.0]
    blend = build_gpt_dataset([BlendEntry(p, w) for p, w in zip(prefixes, weights)], num_samples=400,
                              seq_len=8, seed=5, cache_dir=tmp_path / "c")
    assert isinstance(blend, BlendedDataset) and len(blend) == 400
    counts = np.bincount(np.asarray(blend.dataset_index), minlength=3)
    assert np.abs(counts - np.array([200, 100, 100])).max() <= 1
    # Each part is sized to exactly what the blend draws from it.
    assert [len(d) for d in blend.datasets] == counts.tolist()
    for i in range(400):
        k = int(blend.dataset_index[i])
        sample = blend[i]
        assert np.array_equal(sample, blend.datasets[k][int(blend.dataset_sample_index[i])])
        assert (sample // 1000 == k).all()  # tokens come from dataset k only


def test_blend_is_deterministic_across_fresh_builds(tmp_path, three):
    prefixes, _ = three
    entries = [{"prefix": p, "weight": w} for p, w in zip(prefixes, (0.2, 0.5, 0.3))]
    a = build_gpt_dataset(entries, 150, seq_len=8, seed=1, cache_dir=tmp_path / "a")
    b = build_gpt_dataset(entries, 150, seq_len=8, seed=1, cache_dir=tmp_path / "b")
    c = build_gpt_dataset(entries, 150, seq_len=8, seed=2, cache_dir=tmp_path / "a")
    assert all(np.array_equal(a[i], b[i]) for i in range(150))
    assert sum(np.array_equal(a[i], c[i]) for i in range(150)) < 15
    again = build_gpt_dataset(entries, 150, seq_len=8, seed=1, cache_dir=tmp_path / "a")
    assert not again.built_indices and not any(d.built_indices for d in again.datasets)
    clone = pickle.loads(pickle.dumps(again))  # what DataLoader workers receive
    assert all(np.array_equal(a[i], clone[i]) for i in range(150))


def test_repeat_contributes_exact_passes(tmp_path, three):
    prefixes, docs = three
    blend = build_gpt_dataset([BlendEntry(prefixes[0], repeat=4), BlendEntry(prefixes[1], repeat=1),
                               BlendEntry(prefixes[2], repeat=2)], num_samples=None, seq_len=8, seed=3,
                              cache_dir=tmp_path / "c")
    repeats = (4, 1, 2)
    tokens = [sum(len(s) for d in ds for s in d) for ds in docs]
    sizes = [(r * t - 1) // 8 for r, t in zip(repeats, tokens)]
    assert len(blend) == sum(sizes)
    which, local = np.asarray(blend.dataset_index), np.asarray(blend.dataset_sample_index)
    assert np.bincount(which, minlength=3).tolist() == sizes
    for k, part in enumerate(blend.datasets):
        assert part.num_epochs == repeats[k] and len(part) == sizes[k]
        assert sorted(local[which == k].tolist()) == list(range(sizes[k]))  # every sample exactly once
        # Every document appears exactly `repeat` times in the stream the samples are cut from.
        assert (np.bincount(np.asarray(part.document_index)) == repeats[k]).all()
        assert sorted(np.asarray(part.shuffle_index).tolist()) == list(range(sizes[k]))
    # The interleave keeps each part's share of the samples seen so far close to its share of the total.
    share = np.cumsum(np.eye(3, dtype=np.int64)[which], axis=0) / np.arange(1, len(which) + 1)[:, None]
    assert np.abs(share[len(which) // 2] - np.array(sizes) / sum(sizes)).max() < 0.01


def test_single_entries_return_the_gpt_dataset(tmp_path, three):
    prefixes, _ = three
    ds = build_gpt_dataset(prefixes[0], 30, seq_len=8, seed=0, cache_dir=tmp_path / "c")
    assert isinstance(ds, GPTDataset) and len(ds) == 30
    rep = build_gpt_dataset([BlendEntry(prefixes[1], repeat=4)], num_samples=10**9, seq_len=8, seed=0,
                            cache_dir=tmp_path / "c")
    assert isinstance(rep, GPTDataset) and rep.num_epochs == 4 and len(rep) == (4 * rep.tokens_per_epoch - 1) // 8


def test_blend_split_valid(tmp_path, three):
    prefixes, _ = three
    entries = [BlendEntry(p) for p in prefixes]
    train = build_gpt_dataset(entries, 90, seq_len=8, seed=0, split="train", valid_fraction=0.2,
                              cache_dir=tmp_path / "c")
    valid = build_gpt_dataset(entries, 30, seq_len=8, seed=0, split="valid", valid_fraction=0.2,
                              cache_dir=tmp_path / "c")
    for t, v in zip(train.datasets, valid.datasets):
        assert set(t.documents.tolist()).isdisjoint(v.documents.tolist())


def test_valid_split_of_a_repeated_blend_keeps_the_training_mix(tmp_path, three):
    prefixes, _ = three
    entries = [BlendEntry(prefixes[0], repeat=4), BlendEntry(prefixes[2], repeat=1)]
    valid = build_gpt_dataset(entries, 40, seq_len=8, seed=0, split="valid", valid_fraction=0.3,
                              cache_dir=tmp_path / "c")
    assert len(valid) == 40
    held_out = [4 * valid.datasets[0].tokens_per_epoch, 1 * valid.datasets[1].tokens_per_epoch]
    counts = np.bincount(np.asarray(valid.dataset_index), minlength=2)
    assert np.abs(counts - 40 * np.array(held_out) / sum(held_out)).max() <= 1
    exact = build_gpt_dataset(entries, None, seq_len=8, seed=0, split="valid", valid_fraction=0.3,
                              cache_dir=tmp_path / "c")
    assert [d.num_epochs for d in exact.datasets] == [4, 1]


def test_bad_blends_raise_clear_errors(tmp_path, three):
    prefixes, _ = three
    c = tmp_path / "c"
    with pytest.raises(GPTDatasetError, match="weight must be a finite number > 0"):
        BlendEntry(prefixes[0], 0.0)
    with pytest.raises(GPTDatasetError, match="weight must be a finite number > 0"):
        BlendEntry(prefixes[0], -1.0)
    with pytest.raises(GPTDatasetError, match="weight must be a finite number > 0"):
        BlendEntry(prefixes[0], float("nan"))
    with pytest.raises(GPTDatasetError, match="repeat must be an integer >= 1"):
        BlendEntry(prefixes[0], repeat=0)
    with pytest.raises(GPTDatasetError, match="repeat must be an integer >= 1"):
        BlendEntry(prefixes[0], repeat=1.5)
    with pytest.raises(GPTDatasetError, match="sets both weight=0.5 and repeat=4"):
        BlendEntry(prefixes[0], 0.5, repeat=4)
    with pytest.raises(GPTDatasetError, match="mixes repeated entries"):
        build_gpt_dataset([BlendEntry(prefixes[0], repeat=4), BlendEntry(prefixes[1], 0.5)], 10, 8, 0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="blend is empty"):
        build_gpt_dataset([], 10, 8, 0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="unknown: \\['weigth'\\]"):
        build_gpt_dataset([{"prefix": prefixes[0], "weigth": 2}], 10, 8, 0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="num_samples must be an integer >= 1 for a weighted blend"):
        build_gpt_dataset([BlendEntry(prefixes[0]), BlendEntry(prefixes[1])], None, 8, 0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="fewer than one sample"):
        build_gpt_dataset([BlendEntry(prefixes[0], repeat=1)], None, 100_000, 0, cache_dir=c)
