"""GPTDataset: samples equal a pure-Python reference of the documented algorithm; epochs, split, cache, errors."""
import importlib.machinery
import importlib.util
import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest

from megasnow import _dataset_helpers
from megasnow.data.gpt_dataset import SPLIT_SEED, GPTDataset, GPTDatasetError
from megasnow.data.indexed import IndexedDatasetBuilder, IndexedDatasetError, data_file_path, index_file_path
from tests.conftest import anchor_missing

# ---- pure-Python reference of the documented randomness (csrc/dataset_helpers.cpp) -------------------------------
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M64

    def next(self):
        self.state = (self.state + GOLDEN) & M64
        return mix64(self.state)

    def below(self, bound):  # Lemire's unbiased multiply-shift
        m = self.next() * bound
        if (m & M64) < bound:
            threshold = ((1 << 64) - bound) % bound
            while (m & M64) < threshold:
                m = self.next() * bound
        return m >> 64


def stream_rng(seed, purpose, epoch):
    return SplitMix64(mix64(mix64(mix64(seed) ^ ((purpose * GOLDEN) & M64)) ^ (epoch + 1)))


def shuffled(items, rng):
    a = list(items)
    for i in range(len(a) - 1, 0, -1):
        j = rng.below(i + 1)
        a[i], a[j] = a[j], a[i]
    return a


def reference_samples(documents, selected, seq_len, seed, num_samples):
    """documents: list of documents, each a list of sequences (token lists). Returns the expected samples."""
    tokens = sum(len(s) for d in selected for s in documents[d])
    epochs = 1
    while (epochs * tokens - 1) // seq_len < num_samples:
        epochs += 1
    order = []
    for e in range(epochs):
        order += shuffled(selected, stream_rng(seed, 1, e))
    stream = [t for d in order for s in documents[d] for t in s]
    total = (len(stream) - 1) // seq_len
    bounds = [min(-(-e * tokens // seq_len), total) for e in range(epochs)] + [total]
    ids = []
    for g in range(epochs):
        ids += shuffled(range(bounds[g], bounds[g + 1]), stream_rng(seed, 2, g))
    return [stream[j * seq_len: j * seq_len + seq_len + 1] for j in ids[:num_samples]], epochs


def write_documents(prefix, documents, dtype=np.uint16):
    """documents: list of documents, each a list of sequences (token lists)."""
    builder = IndexedDatasetBuilder(data_file_path(prefix), dtype=dtype)
    for doc in documents:
        for seq in doc:
            builder.add_item(np.asarray(seq, dtype=np.int64))
        builder.end_document()
    builder.finalize(index_file_path(prefix))
    return str(prefix)


def random_documents(rng, n, max_len=40, vocab=60000, max_seqs=1):
    return [[list(rng.integers(0, vocab, rng.integers(0 if max_seqs > 1 else 1, max_len)))
             for _ in range(rng.integers(1, max_seqs + 1))] for _ in range(n)]


def megatron_helpers():
    """megatron-core's compiled helpers_cpp, loaded directly (importing megatron.core itself takes seconds)."""
    spec = importlib.util.find_spec("megatron")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(spec.submodule_search_locations[0], "core", "datasets")
    names = [f for f in os.listdir(folder) if f.startswith("helpers_cpp")] if os.path.isdir(folder) else []
    if not names:
        return None
    loader = importlib.machinery.ExtensionFileLoader("helpers_cpp", os.path.join(folder, names[0]))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("helpers_cpp", loader))
    loader.exec_module(module)
    return module


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    docs = random_documents(rng, 60)
    return write_documents(tmp_path / "corpus", docs), docs


# ---- sample contents ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seq_len,num_samples", [(8, 50), (16, 400), (7, 1)])
def test_samples_equal_reference_concatenation(tmp_path, corpus, seq_len, num_samples):
    prefix, docs = corpus
    ds = GPTDataset(prefix, seq_len=seq_len, seed=3, num_samples=num_samples, cache_dir=tmp_path / "c")
    expected, epochs = reference_samples(docs, list(range(len(docs))), seq_len, 3, num_samples)
    assert len(ds) == num_samples and ds.num_epochs == epochs
    for i in range(num_samples):
        sample = ds[i]
        assert sample.dtype == np.int64 and sample.shape == (seq_len + 1,)
        assert sample.tolist() == expected[i], i


def test_multi_sequence_and_empty_documents_stay_contiguous(tmp_path):
    rng = np.random.default_rng(1)
    docs = random_documents(rng, 30, max_len=12, max_seqs=3)  # some sequences are empty
    prefix = write_documents(tmp_path / "multi", docs)
    ds = GPTDataset(prefix, seq_len=5, seed=11, num_samples=120, cache_dir=tmp_path / "c")
    expected, _ = reference_samples(docs, list(range(len(docs))), 5, 11, 120)
    assert [ds[i].tolist() for i in range(len(ds))] == expected


def test_int32_token_datasets(tmp_path):
    docs = [[[100_000 + i, 200_000 + i, 7]] for i in range(20)]
    prefix = write_documents(tmp_path / "wide", docs, dtype=np.int32)
    ds = GPTDataset(prefix, seq_len=4, seed=0, num_samples=10, cache_dir=tmp_path / "c")
    expected, _ = reference_samples(docs, list(range(20)), 4, 0, 10)
    assert [ds[i].tolist() for i in range(10)] == expected


def test_sample_index_matches_megatron_build_sample_idx():
    megatron = megatron_helpers() or anchor_missing("megatron-core", "its compiled helpers_cpp was not found")
    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        sizes = rng.integers(0, 30, n).astype(np.int32)
        sizes[rng.integers(0, n)] += 1
        epochs = int(rng.integers(1, 4))
        tokens = int(sizes.sum())
        seq_len = int(rng.integers(1, max(2, tokens)))
        if epochs * tokens < seq_len + 1 or seq_len < 2:
            continue
        doc_index = _dataset_helpers.build_document_index(np.arange(n + 1), np.arange(n), epochs, 5)
        ours = _dataset_helpers.build_sample_index(sizes, doc_index, seq_len)
        theirs = megatron.build_sample_idx_int64(sizes, doc_index, seq_len, epochs, tokens, True, 1)
        np.testing.assert_array_equal(ours, theirs)


# ---- shuffles and epochs -----------------------------------------------------------------------------------------
def test_same_seed_same_samples_different_seed_different(tmp_path, corpus):
    prefix, _ = corpus
    a = GPTDataset(prefix, seq_len=8, seed=5, num_samples=100, cache_dir=tmp_path / "c1")
    b = GPTDataset(prefix, seq_len=8, seed=5, num_samples=100, cache_dir=tmp_path / "c2")
    c = GPTDataset(prefix, seq_len=8, seed=6, num_samples=100, cache_dir=tmp_path / "c1")
    assert a.built_indices and b.built_indices and c.built_indices
    same = [np.array_equal(a[i], b[i]) for i in range(100)]
    assert all(same)
    assert not np.array_equal(a.document_index, c.document_index)
    assert sum(np.array_equal(a[i], c[i]) for i in range(100)) < 10


def test_epochs_cover_requested_samples_each_document_once_per_epoch(tmp_path, corpus):
    prefix, docs = corpus
    ds = GPTDataset(prefix, seq_len=16, seed=9, num_samples=500, cache_dir=tmp_path / "c")
    tokens = sum(len(s) for d in docs for s in d)
    assert ds.tokens_per_epoch == tokens
    assert (ds.num_epochs * tokens - 1) // 16 >= 500 > ((ds.num_epochs - 1) * tokens - 1) // 16
    assert ds.num_epochs >= 3
    per_epoch = np.asarray(ds.document_index).reshape(ds.num_epochs, len(docs))
    for e, order in enumerate(per_epoch):
        assert sorted(order.tolist()) == list(range(len(docs)))
        if e:
            assert not np.array_equal(order, per_epoch[0])  # each epoch has its own shuffle
    # All complete epochs are used in full, epoch by epoch; the final epoch gives a subset.
    last_full = -(-(ds.num_epochs - 1) * tokens // 16)
    shuffle = np.asarray(ds.shuffle_index)
    assert sorted(shuffle[:last_full].tolist()) == list(range(last_full))
    assert len(set(shuffle.tolist())) == 500 and shuffle[last_full:].min() >= last_full


def test_more_samples_keep_complete_epochs_identical(tmp_path, corpus):
    prefix, _ = corpus
    small = GPTDataset(prefix, seq_len=16, seed=4, num_samples=300, cache_dir=tmp_path / "c")
    large = GPTDataset(prefix, seq_len=16, seed=4, num_samples=900, cache_dir=tmp_path / "c")
    tokens = small.tokens_per_epoch
    full = -(-(small.num_epochs - 1) * tokens // 16)
    assert full > 0
    for i in range(full):
        assert np.array_equal(small[i], large[i])


def test_split_is_by_documents_disjoint_and_seed_independent(tmp_path):
    # Every token of document d is d, so a sample's tokens tell which documents it came from.
    docs = [[[d] * (3 + d % 5)] for d in range(100)]
    prefix = write_documents(tmp_path / "tagged", docs)
    train = GPTDataset(prefix, seq_len=8, seed=1, num_samples=200, split="train", valid_fraction=0.1,
                       cache_dir=tmp_path / "c")
    valid = GPTDataset(prefix, seq_len=8, seed=2, num_samples=20, split="valid", valid_fraction=0.1,
                       cache_dir=tmp_path / "c")
    assert len(valid.documents) == 10 and len(train.documents) == 90
    assert set(train.documents.tolist()).isdisjoint(valid.documents.tolist())
    expected_valid = sorted(shuffled(range(100), stream_rng(SPLIT_SEED, 3, 0))[:10])
    assert valid.documents.tolist() == expected_valid
    train_tokens = set(np.concatenate([train[i] for i in range(len(train))]).tolist())
    valid_tokens = set(np.concatenate([valid[i] for i in range(len(valid))]).tolist())
    assert train_tokens <= set(train.documents.tolist())
    assert valid_tokens <= set(valid.documents.tolist())
    assert train.tokens_per_epoch == sum(len(docs[d][0]) for d in train.documents)
    # A larger valid fraction only adds documents to the valid set.
    bigger = GPTDataset(prefix, seq_len=8, seed=2, num_samples=20, split="valid", valid_fraction=0.2,
                        cache_dir=tmp_path / "c")
    assert set(valid.documents.tolist()) < set(bigger.documents.tolist())


def test_num_epochs_gives_exact_passes(tmp_path, corpus):
    prefix, docs = corpus
    ds = GPTDataset(prefix, seq_len=8, seed=0, num_epochs=4, cache_dir=tmp_path / "c")
    assert ds.num_epochs == 4 and len(ds) == (4 * ds.tokens_per_epoch - 1) // 8
    counts = np.bincount(np.asarray(ds.document_index), minlength=len(docs))
    assert (counts == 4).all()
    assert sorted(np.asarray(ds.shuffle_index).tolist()) == list(range(len(ds)))


# ---- cache -------------------------------------------------------------------------------------------------------
def test_cache_hit_reuses_files_and_parameter_changes_invalidate(tmp_path, corpus):
    prefix, docs = corpus
    cache = tmp_path / "cache"
    first = GPTDataset(prefix, seq_len=8, seed=1, num_samples=50, cache_dir=cache)
    assert first.built_indices
    mtimes = {p: os.stat(p).st_mtime_ns for p in first.index_paths.values()}
    again = GPTDataset(prefix, seq_len=8, seed=1, num_samples=50, cache_dir=cache)
    assert not again.built_indices and again.index_paths == first.index_paths
    assert {p: os.stat(p).st_mtime_ns for p in again.index_paths.values()} == mtimes
    assert isinstance(again.sample_index, np.memmap)
    for change in ({"seq_len": 9}, {"seed": 2}, {"num_samples": 51}, {"valid_fraction": 0.2}):
        kwargs = dict(seq_len=8, seed=1, num_samples=50, cache_dir=cache) | change
        other = GPTDataset(prefix, **kwargs)
        assert other.built_indices and other.index_paths != first.index_paths, change
    # Rewriting the data (new size/mtime) invalidates too.
    write_documents(prefix, docs[:-1])
    rewritten = GPTDataset(prefix, seq_len=8, seed=1, num_samples=50, cache_dir=cache)
    assert rewritten.built_indices and rewritten.index_paths != first.index_paths
    # A set whose manifest is missing (crash before commit) is rebuilt.
    manifest = next(iter(rewritten.index_paths.values())).rsplit("-", 1)[0] + ".json"
    os.unlink(manifest)
    assert GPTDataset(prefix, seq_len=8, seed=1, num_samples=50, cache_dir=cache).built_indices


def _build_in_process(prefix, cache, queue):
    ds = GPTDataset(prefix, seq_len=8, seed=1, num_samples=300, cache_dir=cache)
    queue.put((ds.built_indices, ds[17].tolist()))


def test_concurrent_processes_build_once(tmp_path, corpus):
    prefix, _ = corpus
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(prefix, str(tmp_path / "c"), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(built for built, _ in results) == [False, False, True]
    assert len({tuple(sample) for _, sample in results}) == 1


def test_pickle_remaps_cached_indices(tmp_path, corpus):
    prefix, _ = corpus
    ds = GPTDataset(prefix, seq_len=8, seed=1, num_samples=40, cache_dir=tmp_path / "c")
    blob = pickle.dumps(ds)
    assert len(blob) < 4096  # the index arrays are not copied into the pickle
    clone = pickle.loads(blob)
    assert all(np.array_equal(ds[i], clone[i]) for i in range(40))


def test_a_split_shorter_than_one_sample_spans_epochs(tmp_path, corpus):
    """With num_samples, a split of fewer than seq_len + 1 tokens (a small synthetic set in a blend) is read over as
    many epochs as the samples need, each sample spanning epochs (Megatron-core's GPTDataset._get_num_epochs), and
    equals the reference; with num_epochs it stays an error (see below)."""
    prefix, docs = corpus
    tokens = sum(len(s) for d in docs for s in d)
    seq_len = tokens + tokens // 2  # one and a half epochs per sample
    ds = GPTDataset(prefix, seq_len=seq_len, seed=3, num_samples=4, cache_dir=tmp_path / "c")
    expected, epochs = reference_samples(docs, list(range(len(docs))), seq_len, 3, 4)
    assert len(ds) == 4 and ds.num_epochs == epochs == 6  # (4 x 1.5 epochs + 1 token) -> 6
    assert [ds[i].tolist() for i in range(4)] == expected


# ---- bad inputs --------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tmp_path, corpus):
    prefix, docs = corpus
    tokens = sum(len(s) for d in docs for s in d)
    c = tmp_path / "c"
    with pytest.raises(GPTDatasetError, match=f"{tokens} tokens, fewer than one sample of seq_len \\+ 1 = "
                                              f"{tokens + 1} in 1 epoch"):
        GPTDataset(prefix, seq_len=tokens, seed=0, num_epochs=1, cache_dir=c)
    with pytest.raises(GPTDatasetError, match=f"has {tokens} tokens, so 10000000000 samples of seq_len 8192 would "
                                              f"read it \\d+ times; give it more data or a smaller weight"):
        GPTDataset(prefix, seq_len=8192, seed=0, num_samples=10**10, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="num_samples must be an integer >= 1"):
        GPTDataset(prefix, seq_len=8, seed=0, num_samples=0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="seq_len must be an integer >= 1"):
        GPTDataset(prefix, seq_len=-4, seed=0, num_samples=3, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="exactly one of num_samples and num_epochs"):
        GPTDataset(prefix, seq_len=8, seed=0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="valid_fraction must be in"):
        GPTDataset(prefix, seq_len=8, seed=0, num_samples=3, valid_fraction=1.0, cache_dir=c)
    with pytest.raises(GPTDatasetError, match="needs valid_fraction > 0"):
        GPTDataset(prefix, seq_len=8, seed=0, num_samples=3, split="valid", cache_dir=c)
    with pytest.raises(GPTDatasetError, match="split must be one of"):
        GPTDataset(prefix, seq_len=8, seed=0, num_samples=3, split="test", cache_dir=c)
    with pytest.raises(GPTDatasetError, match="has no documents"):
        GPTDataset(prefix, seq_len=8, seed=0, num_samples=3, split="valid", valid_fraction=0.001, cache_dir=c)
    with pytest.raises(IndexedDatasetError):
        GPTDataset(tmp_path / "missing", seq_len=8, seed=0, num_samples=3, cache_dir=c)
    ds = GPTDataset(prefix, seq_len=8, seed=0, num_samples=3, cache_dir=c)
    with pytest.raises(IndexError, match="out of range for 3 samples"):
        ds[3]


# ---- torch.distributed: rank 0 builds, the others wait and map ---------------------------------------------------
def _distributed_build(rank, world_size, prefix, cache):
    ds = GPTDataset(prefix, seq_len=8, seed=1, num_samples=200, cache_dir=cache)
    return ds.built_indices, [ds[i].tolist() for i in (0, 99, 199)]


def test_rank_zero_builds_under_torch_distributed(tmp_path, corpus):
    from megasnow.parallel.spawn import run_processes

    prefix, _ = corpus
    results = run_processes(_distributed_build, 2, args=(prefix, str(tmp_path / "c")), timeout_s=120)
    assert [built for built, _ in results] == [True, False]
    assert results[0][1] == results[1][1]
