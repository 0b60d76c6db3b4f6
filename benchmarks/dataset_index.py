"""Benchmark: GPT dataset index build for a synthetic 1B-token dataset at seq 8192, and `import megasnow.data` time.

Megatron-Core's own index path (numpy document shuffle + helpers_cpp.build_sample_idx + numpy sample shuffle) runs
in the same process as the anchor. Usage: python benchmarks/dataset_index.py [--tokens 1e9] [--seq-len 8192]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def synthetic_code_lengths(total_tokens, seed=0):
    """Document lengths like source files: log-normal (median 500 tokens, mean ~1.2k), clipped to [16, 200k]."""
    rng = np.random.default_rng(seed)
    chunks, have = [], 0
    while have < total_tokens:
        x = np.clip(rng.lognormal(np.log(500), 1.3, 1 << 20), 16, 200_000).astype(np.int32)
        chunks.append(x)
        have += int(x.sum(dtype=np.int64))
    lengths = np.concatenate(chunks)
    cut = int(np.searchsorted(np.cumsum(lengths, dtype=np.int64), total_tokens)) + 1
    return lengths[:cut]


def write_sparse_dataset(prefix, lengths):
    """A real .idx and a sparse .bin of the right size: index builds read only the lengths."""
    from megasnow.data.indexed import encode_index

    with open(prefix + ".idx", "wb") as f:
        f.write(encode_index(np.uint16, lengths, np.arange(len(lengths) + 1, dtype=np.int64)))
    with open(prefix + ".bin", "wb") as f:
        f.truncate(int(lengths.sum(dtype=np.int64)) * 2)


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def import_time(module, repeats):
    """Median seconds of `import module` in a fresh interpreter (timed inside it, excluding startup)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
            for _ in range(repeats)]
    return statistics.median(runs)


def megatron_anchor(lengths, seq_len, num_samples, seed):
    """Megatron-Core's GPTDataset index build (its own functions), one epoch unless more are needed."""
    from megatron.core.datasets import helpers_cpp
    from megatron.core.datasets.gpt_dataset import _build_document_index, _build_shuffle_index

    tokens = int(lengths.sum(dtype=np.int64))
    epochs = -(-(num_samples * seq_len + 1) // tokens)
    state = np.random.RandomState(seed)
    doc_index = _build_document_index(np.arange(len(lengths), dtype=np.int32), epochs, state, False)
    sample_index = helpers_cpp.build_sample_idx_int64(lengths, doc_index, seq_len, epochs, tokens, True, 1)
    _build_shuffle_index(len(sample_index) - 1, len(sample_index) - 1, state)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=float, default=1e9)
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 4], help="passes over the data (4: phase 2)")
    ap.add_argument("--no-megatron", action="store_true", help="skip the megatron-core anchor")
    args = ap.parse_args()

    from megasnow import _dataset_helpers as h
    from megasnow.data.gpt_dataset import GPTDataset

    lengths = synthetic_code_lengths(int(args.tokens))
    tokens = int(lengths.sum(dtype=np.int64))
    print(f"dataset: {len(lengths):,} documents, {tokens:,} tokens (median {int(np.median(lengths))}, "
          f"mean {lengths.mean():.0f}, max {lengths.max():,}); seq_len {args.seq_len}")
    if not args.no_megatron:
        t0 = time.perf_counter()
        import megatron.core.datasets.gpt_dataset  # noqa: F401  (import cost kept out of the timings)
        print(f"(megatron.core.datasets.gpt_dataset import: {time.perf_counter() - t0:.1f} s, not timed below)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "synthetic")
        write_sparse_dataset(prefix, lengths)
        caches = iter(range(10**6))
        bounds, docs = np.arange(len(lengths) + 1, dtype=np.int64), np.arange(len(lengths), dtype=np.int64)
        for epochs in args.epochs:
            num_samples = (epochs * tokens - 1) // args.seq_len
            warm_cache = os.path.join(tmp, f"warm{epochs}")
            label = f"{epochs} epoch{'s' if epochs > 1 else ''} ({num_samples:,} samples)"

            def cold_build():  # open the dataset, build all three indices, write the .npy cache, map it back
                GPTDataset(prefix, seq_len=args.seq_len, seed=1234, num_samples=num_samples,
                           cache_dir=os.path.join(tmp, f"cache{next(caches)}"))

            def cached_load():
                GPTDataset(prefix, seq_len=args.seq_len, seed=1234, num_samples=num_samples, cache_dir=warm_cache)

            def core_only():  # the C++ index builders alone, from the lengths array
                di = h.build_document_index(bounds, docs, epochs, 1234)
                si = h.build_sample_index(lengths, di, args.seq_len)
                group_bounds = np.append(np.minimum(-(-np.arange(epochs) * tokens // args.seq_len), len(si) - 1),
                                         len(si) - 1)
                h.build_shuffle_index(group_bounds, num_samples, 1234)

            cached_load()  # fill the warm cache
            rows.append((f"megasnow GPTDataset, cold: build + write cache + map, {label}",
                         *median_time(cold_build, args.repeats)))
            rows.append((f"megasnow GPTDataset, cache hit: open + map, {label}", *median_time(cached_load, args.repeats)))
            rows.append((f"megasnow C++ index builders only, {label}", *median_time(core_only, args.repeats)))
            if not args.no_megatron:
                rows.append((f"Megatron-Core index build (numpy shuffles + helpers_cpp, no cache write), {label}",
                             *median_time(lambda: megatron_anchor(lengths, args.seq_len, num_samples, 1234),
                                          args.repeats)))

    print(f"\n| index build, {tokens / 1e9:.2f}B tokens, seq {args.seq_len} | median s | runs (s) |")
    print("|---|---|---|")
    for name, t, runs in rows:
        print(f"| {name} | {t:.3f} | {', '.join(f'{r:.3f}' for r in runs)} |")
    print("target: < 5 s\n")

    print("| import (fresh interpreter, median of 7) | seconds |")
    print("|---|---|")
    for module in ("megasnow.data", "megasnow.data.blended_dataset", "megasnow.data.sampler"):
        print(f"| import {module} | {import_time(module, 7):.3f} |")
    print("target: import megasnow.data < 0.5 s")


if __name__ == "__main__":
    main()
