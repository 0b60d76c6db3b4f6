"""PretrainingSampler: Megatron's sequential pretraining sampler, sliced per data-parallel rank, resumable.

The dataset is already shuffled, so the sampler walks sample ids in order from `consumed_samples`; each global
micro-batch (micro_batch_size * data_parallel_size consecutive ids) is cut into one slice per DP rank.
"""


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not hasattr(value, "__index__") or value.__index__() < minimum:
        raise ValueError(f"PretrainingSampler: {name} must be an integer >= {minimum}, got {value!r}")


class PretrainingSampler:
    """Yields this rank's micro-batches (lists of sample ids); use as a DataLoader `batch_sampler`.

    Rank r of R takes ids [c + r*m, c + (r+1)*m) of every global micro-batch starting at c, so ranks are
    disjoint and the union over ranks of one global micro-batch (or training step) is the same contiguous
    block of ids whatever R is. Resume by passing the consumed_samples stored in the checkpoint.
    """

    def __init__(self, total_samples, consumed_samples, micro_batch_size, data_parallel_rank,
                 data_parallel_size, drop_last=True):
        for name, value, minimum in (("total_samples", total_samples, 1), ("consumed_samples", consumed_samples, 0),
                                     ("micro_batch_size", micro_batch_size, 1),
                                     ("data_parallel_size", data_parallel_size, 1),
                                     ("data_parallel_rank", data_parallel_rank, 0)):
            _check_int(name, value, minimum)
        if data_parallel_rank >= data_parallel_size:
            raise ValueError(f"PretrainingSampler: data_parallel_rank {data_parallel_rank} must be < "
                             f"data_parallel_size {data_parallel_size}")
        if consumed_samples > total_samples:
            raise ValueError(f"PretrainingSampler: consumed_samples {consumed_samples} exceeds the dataset's "
                             f"{total_samples} samples (resuming past the end of the data?)")
        self.total_samples = int(total_samples)
        self.consumed_samples = int(consumed_samples)
        self.micro_batch_size = int(micro_batch_size)
        self.data_parallel_rank = int(data_parallel_rank)
        self.data_parallel_size = int(data_parallel_size)
        self.global_micro_batch = self.micro_batch_size * self.data_parallel_size
        self.drop_last = drop_last

    def __len__(self):
        """Micro-batches this rank will yield."""
        left = self.total_samples - self.consumed_samples
        full = left // self.global_micro_batch
        if self.drop_last or left % self.global_micro_batch == 0:
            return full
        return full + (1 if self._tail_slice(left % self.global_micro_batch) else 0)

    def _tail_slice(self, n):
        """This rank's share of a final partial global micro-batch of n ids (evenly split, front ranks first)."""
        start = self.consumed_samples + (self.total_samples - self.consumed_samples) // self.global_micro_batch \
            * self.global_micro_batch
        per_rank, extra = divmod(n, self.data_parallel_size)
        r = self.data_parallel_rank
        lo = start + r * per_rank + min(r, extra)
        return list(range(lo, lo + per_rank + (1 if r < extra else 0)))

    def __iter__(self):
        m, first = self.micro_batch_size, self.data_parallel_rank * self.micro_batch_size
        start = self.consumed_samples
        while start + self.global_micro_batch <= self.total_samples:
            yield list(range(start + first, start + first + m))
            start += self.global_micro_batch
        if not self.drop_last and start < self.total_samples:
            tail = self._tail_slice(self.total_samples - start)
            if tail:
                yield tail
