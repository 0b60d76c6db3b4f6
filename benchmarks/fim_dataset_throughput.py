#!/usr/bin/env python
"""Fill-in-the-middle data throughput: samples/s of a GPT dataset of real code read with data.fim.rate 0.5 vs 0.

Repository documents (StarCoder2 format) of real source files on this machine, a 32k SentencePiece tokenizer trained
on them, samples of --seq-len tokens read in the training order. Variants, interleaved per repeat (median reported):
plain reads; FIM at file and sample level (megasnow.data.fim: only the tokens at the cuts are re-encoded); the same
FIM with the three pieces fully decoded and re-encoded (the reference implementations' way, for comparison); and the
trainer's read path (MicroBatches: stacking and tensors) plain and with FIM; and the training loop as an accelerator
sees it: a step of --step-ms milliseconds during which the host waits (time.sleep, as it waits on a GPU), fed by
MicroBatches reading in the loop (data.num_workers 0) or by 2 DataLoader workers ahead of it (data.num_workers 2).

Usage: python benchmarks/fim_dataset_throughput.py [--mb 20] [--seq-len 8192] [--samples 300] [--repeats 5]
           [--step-ms 2 20 100]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks.code_corpus import build_code_jsonl, train_code_tokenizer  # noqa: E402


def build_corpus(args):
    """(tokenizer path, dataset prefix): repository documents of real code, binarized with EOD (cached)."""
    from megasnow.curate.documents import repo_documents
    from megasnow.data.indexed import write_dataset
    from megasnow.data.tokenizer import load_tokenizer

    os.makedirs(args.data_dir, exist_ok=True)
    jsonl = os.path.join(args.data_dir, "fim_code.jsonl")
    docs, size = build_code_jsonl(jsonl, int(args.mb * 1e6))
    model = os.path.join(args.data_dir, f"fim{args.vocab_size // 1000}k.model")
    train_code_tokenizer(jsonl, model, args.vocab_size, ROOT)
    prefix = os.path.join(args.data_dir, f"fim_repos_{args.vocab_size // 1000}k")
    if not os.path.exists(prefix + ".idx"):
        by_repo = {}
        with open(jsonl, encoding="utf-8") as f:
            for k, line in enumerate(f):
                rec = json.loads(line)
                by_repo.setdefault(os.path.dirname(rec["path"]), []).append(
                    {"path": os.path.basename(rec["path"]), "content": rec["text"], "id": str(k)})
        texts = [d["text"] for repo, files in sorted(by_repo.items())
                 for d in repo_documents(files, "code", repo, seed=0, max_chars=1_000_000)]
        tok = load_tokenizer(model)
        ids = tok.encode_batch(texts, num_threads=os.cpu_count() or 1)
        write_dataset(prefix, [t + [tok.eod_id] for t in ids], dtype=np.int32)
    print(f"corpus: {jsonl}: {docs} files, {size / 1e6:.1f} MB of code; tokenizer {model}; dataset {prefix}",
          flush=True)
    return model, prefix


class FullReencode:
    """FIMTransform.split_unit the reference implementations' way: decode the unit, cut, encode all three pieces."""

    def __init__(self, transform):
        self.t = transform

    def __call__(self, unit, u1, u2):
        tok = self.t.tokenizer
        text = tok.decode(unit)
        a, b = sorted((int(u1 * (len(text) + 1)), int(u2 * (len(text) + 1))))
        return self.t._encode(text[:a], text[a:b], text[b:]) if text else None


def read_rate(ds, n):
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t0)


def trainer_rate(ds, n, batch):
    import torch

    from megasnow.train.data import MicroBatches

    mb = MicroBatches(ds, 0, batch, 1, 0, 1, torch.device("cpu"))
    t0 = time.perf_counter()
    for _ in range(n // batch):
        mb.next_step()
    return (n // batch) * batch / (time.perf_counter() - t0)


def loop_rate(ds, n, batch, workers, step_s):
    """Samples/s of a training loop whose step takes `step_s` seconds of host waiting (an accelerator computing),
    fed by MicroBatches with `workers` DataLoader workers; the first batch (worker start-up) is not timed."""
    import torch

    from megasnow.train.data import MicroBatches

    mb = MicroBatches(ds, 0, batch, 1, 0, 1, torch.device("cpu"), num_workers=workers)
    mb.next_step()
    steps = n // batch - 1
    t0 = time.perf_counter()
    for _ in range(steps):
        mb.next_step()
        time.sleep(step_s)
    rate = steps * batch / (time.perf_counter() - t0)
    mb.close()
    return rate


def stats(ds, transform, n):
    """FIM units per sample and the share of <fim_pad> tokens."""
    fim = transform.fim
    units = pads = 0
    for i in range(n):
        out = ds[i]
        units += int((out == fim.prefix).sum())
        pads += int((out == fim.pad).sum())
    return {"fim_units_per_sample": units / n, "pad_token_share": pads / (n * len(out))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=20, help="MB of code text in the corpus")
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".bench_data"))
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--samples", type=int, default=300, help="samples read per variant and repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--step-ms", type=float, nargs="*", default=[2.0, 20.0, 100.0],
                   help="simulated accelerator step times (ms per batch of 4) for the training-loop variants")
    p.add_argument("--out", default=os.path.join(HERE, "results", "fim_throughput.json"))
    args = p.parse_args()

    from megasnow.data.blended_dataset import BlendEntry, build_gpt_dataset
    from megasnow.data.fim import FIMDataset, FIMTransform
    from megasnow.data.tokenizer import load_tokenizer

    model, prefix = build_corpus(args)
    tok = load_tokenizer(model)
    base = build_gpt_dataset(BlendEntry(prefix, repeat=1), None, args.seq_len, seed=1234,
                             cache_dir=os.path.join(args.data_dir, "fim_cache"))
    n = min(args.samples, len(base))
    fim_file = FIMDataset(base, FIMTransform(tok, 0.5, 0.5, "file", seed=1234))
    fim_sample = FIMDataset(base, FIMTransform(tok, 0.5, 0.5, "sample", seed=1234))
    full = FIMTransform(tok, 0.5, 0.5, "file", seed=1234)
    full.split_unit = FullReencode(full)
    fim_full = FIMDataset(base, full)
    variants = {
        "plain (data.fim.rate 0)": lambda: read_rate(base, n),
        "FIM 0.5, file level": lambda: read_rate(fim_file, n),
        "FIM 0.5, sample level": lambda: read_rate(fim_sample, n),
        "FIM 0.5, file level, full decode + re-encode": lambda: read_rate(fim_full, n),
        "trainer read path (MicroBatches, batch 4), plain": lambda: trainer_rate(base, n, 4),
        "trainer read path (MicroBatches, batch 4), FIM 0.5 file": lambda: trainer_rate(fim_file, n, 4),
    }
    for step_ms in args.step_ms:
        for workers in (0, 2):
            for label, ds in (("plain", base), ("FIM 0.5 file", fim_file)):
                variants[f"training loop, step {step_ms:g} ms, data.num_workers {workers}, {label}"] = \
                    (lambda ds=ds, w=workers, s=step_ms / 1e3: loop_rate(ds, n, 4, w, s))
    for run in variants.values():  # warm the page cache and the token table
        run()
    runs = {name: [] for name in variants}
    load = os.getloadavg()
    for _ in range(args.repeats):
        for name, run in variants.items():
            runs[name].append(run())
    medians = {name: statistics.median(v) for name, v in runs.items()}
    plain = medians["plain (data.fim.rate 0)"]
    tokens = int(np.sum(np.asarray(base.indexed.sequence_lengths, dtype=np.int64)))
    print(f"\n{len(base):,} samples of {args.seq_len} tokens ({tokens:,} tokens, {len(base.documents):,} repository "
          f"documents); {n} samples per run, {args.repeats} repeats; load before {load[0]:.2f}\n")
    print("| variant | samples/s (median) | vs plain | µs/sample | runs |")
    print("|---|---|---|---|---|")
    for name, v in medians.items():
        ref = plain
        if name.startswith("trainer read path"):
            ref = medians["trainer read path (MicroBatches, batch 4), plain"]
        elif name.startswith("training loop"):
            ref = medians[name.replace("FIM 0.5 file", "plain")]
        print(f"| {name} | {v:,.0f} | {v / ref:.3f} | {1e6 / v:,.0f} | {', '.join(f'{x:,.0f}' for x in runs[name])} |")
    extra = {"file": stats(fim_file, fim_file.transform, n), "sample": stats(fim_sample, fim_sample.transform, n)}
    print(f"\nFIM units per sample / <fim_pad> share of tokens: {json.dumps(extra)}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    from megasnow.utils.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps({"args": vars(args), "samples": len(base), "runs": runs,
                                            "medians": medians, "stats": extra, "load_before": load[0],
                                            "load_after": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
