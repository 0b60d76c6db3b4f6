"""PretrainingSampler: disjoint DP ranks whose union is the single-rank order, exact resume, tails, errors."""
import numpy as np
import pytest

from megasnow.data.blended_dataset import build_gpt_dataset
from megasnow.data.sampler import PretrainingSampler
from tests.data.test_gpt_dataset import random_documents, write_documents


def rank_batches(total, consumed, micro, dp, drop_last=True):
    return [list(PretrainingSampler(total, consumed, micro, r, dp, drop_last=drop_last)) for r in range(dp)]


@pytest.mark.parametrize("dp", [1, 2, 3, 4])
def test_ranks_disjoint_and_union_equals_single_rank_order(dp):
    total, micro = 103, 2
    per_rank = rank_batches(total, 0, micro, dp)
    single = list(PretrainingSampler(total, 0, micro * dp, 0, 1))
    assert all(len(b) == len(single) for b in per_rank)
    for step, whole in enumerate(single):
        pieces = [per_rank[r][step] for r in range(dp)]
        assert sum(pieces, []) == whole  # rank r holds the r-th slice of the global micro-batch
    seen = [i for batches in per_rank for b in batches for i in b]
    assert len(seen) == len(set(seen)) == (total // (micro * dp)) * micro * dp


def test_a_training_step_sees_the_same_samples_on_any_dp_size():
    total, micro, global_batch = 480, 2, 24
    def step_samples(dp, step):
        accumulation = global_batch // (micro * dp)
        out = set()
        for r in range(dp):
            batches = list(PretrainingSampler(total, 0, micro, r, dp))
            for b in batches[step * accumulation:(step + 1) * accumulation]:
                out.update(b)
        return out
    for step in range(total // global_batch):
        expected = set(range(step * global_batch, (step + 1) * global_batch))
        for dp in (1, 2, 3, 4, 6):
            assert step_samples(dp, step) == expected


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_resume_from_consumed_samples_continues_exactly(dp):
    total, micro = 200, 3
    full = rank_batches(total, 0, micro, dp)
    for steps_done in (0, 1, 7, 16):
        consumed = steps_done * micro * dp
        resumed = rank_batches(total, consumed, micro, dp)
        for r in range(dp):
            assert resumed[r] == full[r][steps_done:]


def test_keep_last_partial_batch_covers_every_sample_once():
    total, micro, dp = 23, 2, 3
    per_rank = rank_batches(total, 5, micro, dp, drop_last=False)
    seen = sorted(i for batches in per_rank for b in batches for i in b)
    assert seen == list(range(5, 23))
    for r in range(dp):
        assert len(PretrainingSampler(total, 5, micro, r, dp, drop_last=False)) == len(per_rank[r])


def test_dp_ranks_read_the_single_rank_samples(tmp_path):
    prefix = write_documents(tmp_path / "c", random_documents(np.random.default_rng(0), 50))
    ds = build_gpt_dataset(prefix, 64, seq_len=8, seed=3, cache_dir=tmp_path / "cache")
    single = [ds[i] for b in PretrainingSampler(len(ds), 16, 4, 0, 1) for i in b]
    per_rank = [[ds[i] for b in PretrainingSampler(len(ds), 16, 2, r, 2) for i in b] for r in range(2)]
    # Interleave the ranks' micro-batches back into global order.
    merged = [s for step in range(len(single) // 4)
              for r in range(2) for s in per_rank[r][2 * step: 2 * step + 2]]
    assert len(merged) == len(single) and all(np.array_equal(a, b) for a, b in zip(merged, single))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="data_parallel_rank 2 must be < data_parallel_size 2"):
        PretrainingSampler(10, 0, 1, 2, 2)
    with pytest.raises(ValueError, match="micro_batch_size must be an integer >= 1"):
        PretrainingSampler(10, 0, 0, 0, 1)
    with pytest.raises(ValueError, match="consumed_samples 11 exceeds the dataset's 10 samples"):
        PretrainingSampler(10, 11, 1, 0, 1)
    with pytest.raises(ValueError, match="total_samples must be an integer >= 1"):
        PretrainingSampler(2.5, 0, 1, 0, 1)
    assert list(PretrainingSampler(np.int64(4), np.int64(0), 2, 0, 1)) == [[0, 1], [2, 3]]
