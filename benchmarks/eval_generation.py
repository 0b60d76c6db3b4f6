"""Generation throughput of the local backend on HumanEval prompts: batched (length-sorted batches of --batch
prompts) vs one prompt at a time, same model, same greedy settings, in one run; the texts are checked to be equal.
Results: benchmarks/results/eval.md.

  python benchmarks/eval_generation.py --model CKPT --tasks 32 --max-tokens 128 --batch 16 --repeats 2
"""
import argparse
import os
import statistics
import time

import torch

from megasnow.eval.codegen import GenerationSettings
from megasnow.eval.prompts import build_request
from megasnow.eval.tasks import load_benchmark
from megasnow.generation.local import LocalBackend, LocalEngine


def run(engine, requests, batch):
    backend = LocalBackend(engine)
    engine.max_num_seqs = batch
    t0 = time.perf_counter()
    results = {r.request_id: r for r in backend.generate(requests)}
    seconds = time.perf_counter() - t0
    tokens = sum(r.completion_tokens for r in results.values())
    return seconds, tokens, {k: r.choices[0].text for k, r in results.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="megasnow checkpoint or HF Llama folder")
    ap.add_argument("--tasks", type=int, default=32, help="first N HumanEval tasks")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--style", choices=["completion", "chat"], default="completion")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = load_benchmark("humaneval")
    tasks = bench.tasks[:args.tasks]
    settings = GenerationSettings(style=args.style, max_tokens=args.max_tokens)
    requests = [build_request(t, args.style, settings.params(i), str(i)) for i, t in enumerate(tasks)]
    engine = LocalEngine.from_path(args.model)
    print(f"model {args.model}, {len(tasks)} prompts, <= {args.max_tokens} new tokens, greedy, {args.style} "
          f"prompts, torch threads {torch.get_num_threads()}, load {os.getloadavg()}", flush=True)
    batched, single, texts = [], [], {}
    for r in range(args.repeats):
        for mode in (["batched", "single"] if r % 2 == 0 else ["single", "batched"]):
            seconds, tokens, out = run(engine, requests, args.batch if mode == "batched" else 1)
            (batched if mode == "batched" else single).append((seconds, tokens))
            texts.setdefault(mode, out)
            print(f"repeat {r}: {mode}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tokens/s",
                  flush=True)
    same = sum(texts["batched"][k] == texts["single"][k] for k in texts["single"])
    print(f"load after {os.getloadavg()}; texts equal batched vs single: {same}/{len(tasks)}")
    b = statistics.median(t / s for s, t in batched)
    s = statistics.median(t / s for s, t in single)
    print(f"\n| mode | tokens/s (median of {args.repeats}) |\n|---|---|")
    print(f"| one prompt at a time | {s:.1f} |\n| batched (max {args.batch} sequences) | {b:.1f} |")
    print(f"\nspeed-up {b / s:.2f}x")


if __name__ == "__main__":
    main()
