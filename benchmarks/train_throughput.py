#!/usr/bin/env python
"""Training throughput: megasnow vs HuggingFace LlamaForCausalLM (SDPA, and SDPA + Liger-Kernel when installed) on the
same model, sequence length and device (tokens/s, TFLOP/s, MFU of full optimizer steps), then a few steps of the
real trainer (`python -m megasnow.train`) on synthetic data. Sized for one 10-minute GPU command:

  GPU: python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_h200
       (snowcoder-1.3b, seq 8192, bf16; micro-batch doubled from 1 up to 8 while it fits; 2 warmup + 6 timed steps)
  CPU: python benchmarks/train_throughput.py      (tiny preset, seq 256: proves the script, MFU n/a; torch threads
       follow OMP_NUM_THREADS)

Each implementation runs in its own subprocess: apply_liger_kernel_to_llama patches transformers process-wide and
would contaminate the HF SDPA baseline, and a fresh process also starts with a clean GPU memory pool.
Writes OUT.csv and OUT.md (default OUT: benchmarks/results/train_throughput_<device>).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MFU_CONVENTION = ("MFU convention: model FLOPs per token from megasnow/model/flops.py (3 x forward; forward = 2 x "
                  "matmul weights incl. the output head + attention 4 x layers x heads x head_dim x seq as Megatron "
                  "counts it, full S x S, recomputation not counted), divided by the device's dense bf16 peak "
                  "(megasnow/train/metrics.py; H100/H200 SXM 989 TFLOP/s).")


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------ one implementation (child process)
def megasnow_step_fn(model_cfg, mbs, seq, device, bf16):
    import torch

    from megasnow.parallel.optimizer import build_optimizer
    from megasnow.parallel.parallelize import ParallelConfig, build_model
    from megasnow.parallel.pipeline.schedules import forward_backward

    pc = ParallelConfig(micro_batch_size=mbs, params_dtype="bf16" if bf16 else "fp32")
    chunks = build_model(model_cfg, pc, seed=0)
    opt = build_optimizer(chunks, lr=1e-4, weight_decay=0.1, clip_grad=1.0)
    x = torch.randint(0, model_cfg.vocab_size, (mbs, seq + 1), device=device)
    batch = [{"tokens": x[:, :-1], "labels": x[:, 1:]}]

    def step():
        opt.zero_grad()
        forward_backward(chunks, batch)
        opt.step()
    return step, (chunks, opt)


def hf_step_fn(model_cfg, mbs, seq, device, bf16, liger=False):
    """HF training as its Trainer does it with bf16=True: fp32 weights, bf16 autocast, fused AdamW."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from megasnow.convert.hf_llama import hf_config_dict

    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()  # process-wide patch: this child process runs nothing else
    d = hf_config_dict(model_cfg)
    for k in ("dtype", "torch_dtype", "architectures", "transformers_version"):
        d.pop(k, None)
    cfg = LlamaConfig(**d)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).to(device)
    model.train()
    if model_cfg.activation_checkpointing != "none":
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    x = torch.randint(0, model_cfg.vocab_size, (mbs, seq), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step, (model, opt)


def measure(make, steps, warmup, device):
    """(median step seconds, peak GiB) over `steps` timed steps after `warmup`."""
    import torch

    step, keep = make()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    del keep, step
    return statistics.median(times), mem


def free(device):
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_child(args):
    """Measure one implementation at one sequence length; writes its row as JSON to args.child_out."""
    import torch

    from megasnow.model.config import get_preset
    from megasnow.model.flops import flops_per_token
    from megasnow.train.metrics import peak_bf16_tflops

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        import torch.distributed as dist

        # megasnow's build_model places the model on the GPU of an NCCL group: make a group of one.
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(args.port))
        dist.init_process_group("nccl", rank=0, world_size=1)
    seq, impl = args.seq, args.child
    base = get_preset(args.preset)
    model_cfg = get_preset(args.preset, max_seq_len=max(seq, base.max_seq_len),
                           activation_checkpointing=args.activation_checkpointing)
    fpt = flops_per_token(model_cfg, seq)
    peak = peak_bf16_tflops(torch.cuda.get_device_name()) if gpu else None

    def make(mbs):
        if impl == "megasnow":
            return megasnow_step_fn(model_cfg, mbs, seq, device, gpu)
        return hf_step_fn(model_cfg, mbs, seq, device, gpu, liger=impl.endswith("liger"))

    best, mbs = None, 1
    while mbs <= args.max_micro_batch:  # doubling from 1 while it fits (one size on CPU)
        free(device)
        try:
            t, mem = measure(lambda: make(mbs), args.steps, args.warmup, device)
        except torch.cuda.OutOfMemoryError:
            log(f"  {impl} seq {seq} mbs {mbs}: out of memory")
            break
        tok_s = mbs * seq / t
        tflops = tok_s * fpt / 1e12
        best = dict(impl=impl, seq=seq, micro_batch=mbs, step_s=t, tokens_per_s=tok_s, tflops=tflops,
                    mfu=(tflops / peak) if peak else None, peak_mem_gib=mem)
        log(f"  {impl} seq {seq} mbs {mbs}: {tok_s:,.0f} tok/s  {tflops:.3g} TFLOP/s  "
            f"MFU {'%.1f%%' % (100 * tflops / peak) if peak else 'n/a'}  peak {_gib(mem)}")
        if not gpu:
            break
        mbs *= 2
    with open(args.child_out, "w") as f:
        json.dump(best, f)
    return 0


# ------------------------------------------------------------------ the real trainer on synthetic data
def trainer_run(args, gpu, workdir, mbs):
    """A few steps of `python -m megasnow.train` (the preset, seq, bf16 on GPU) on random tokens; returns a row."""
    import numpy as np
    import yaml

    from megasnow.data.indexed import IndexedDatasetBuilder, data_file_path, index_file_path
    from megasnow.model.config import get_preset

    seq = args.seq_lens[0]
    vocab = get_preset(args.preset).vocab_size
    gbs = mbs * args.trainer_accumulation
    prefix = os.path.join(workdir, "random")
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(data_file_path(prefix), dtype=np.uint16 if vocab < 65500 else np.int32)
    for _ in range((args.trainer_steps * gbs * (seq + 1)) // 4096 + 8):
        builder.add_item(rng.integers(0, vocab, 4096))
        builder.end_document()
    builder.finalize(index_file_path(prefix))
    cfg = {"model": {"preset": args.preset, "max_seq_len": max(seq, get_preset(args.preset).max_seq_len),
                     "activation_checkpointing": args.activation_checkpointing},
           "data": {"seq_len": seq},
           "train": {"micro_batch_size": mbs, "global_batch_size": gbs, "device": "cuda" if gpu else "cpu"},
           "schedule": {"style": "constant", "max_lr": 1e-4, "min_lr": 1e-4, "warmup_steps": 0},
           "checkpoint": {"dir": None}, "log": {"dir": os.path.join(workdir, "log"), "tensorboard": False},
           "phases": [{"name": "bench", "blend": [{"path": prefix}], "steps": args.trainer_steps}]}
    path = os.path.join(workdir, "run.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    cmd = [sys.executable, "-m", "megasnow.train", path]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=REPO, timeout=args.child_timeout)
    from megasnow.train.metrics import read_metrics

    recs = read_metrics(os.path.join(workdir, "log", "metrics.jsonl"))[1:]  # the first step compiles/warms up
    tok_s = statistics.median(r["tokens_per_s"] for r in recs)
    mfus = [r["mfu"] for r in recs if r["mfu"] is not None]
    return dict(impl=f"megasnow.train (gbs {gbs})", seq=seq, micro_batch=mbs,
                step_s=statistics.median(r["step_time_s"] for r in recs), tokens_per_s=tok_s,
                tflops=statistics.median(r["tflops_per_device"] for r in recs),
                mfu=statistics.median(mfus) if mfus else None,
                # on CPU memory_mb is the process RSS, not comparable with the GPU allocator peaks above
                peak_mem_gib=max(r["memory_mb"] for r in recs) / 1024 if gpu else None)


# ------------------------------------------------------------------ report
def _gib(x):
    return "n/a" if x is None else f"{x:.1f} GiB"


FIELDS = ["impl", "seq", "micro_batch", "step_s", "tokens_per_s", "tflops", "mfu", "peak_mem_gib"]


def write_results(out, rows, header):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    lines = [header, "", MFU_CONVENTION, "",
             "| implementation | seq | micro-batch | tokens/s | TFLOP/s | MFU | peak memory | vs HF SDPA |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next((b["tokens_per_s"] for b in rows if b["impl"] == "hf-sdpa" and b["seq"] == r["seq"]), None)
        lines.append(f"| {r['impl']} | {r['seq']} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tflops']:.3g} | {'%.1f%%' % (100 * r['mfu']) if r['mfu'] is not None else 'n/a'} | "
                     f"{_gib(r['peak_mem_gib'])} | {'%.2fx' % (r['tokens_per_s'] / base) if base else '-'} |")
    text = "\n".join(lines) + "\n"
    with open(out + ".md", "w") as f:
        f.write(text)
    return text


def main(argv=None):
    import torch

    gpu = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="snowcoder-1.3b" if gpu else "tiny")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[8192] if gpu else [256])
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-micro-batch", type=int, default=8 if gpu else 4)
    ap.add_argument("--impls", nargs="+", default=["megasnow", "hf-sdpa", "hf-sdpa-liger"])
    ap.add_argument("--activation-checkpointing", default="none", choices=["none", "selective", "full"])
    ap.add_argument("--trainer-steps", type=int, default=6, help="steps of python -m megasnow.train (0: skip)")
    ap.add_argument("--trainer-micro-batch", type=int, default=None,
                    help="default: the largest that fitted megasnow in the measurement above")
    ap.add_argument("--trainer-accumulation", type=int, default=2, help="micro-batches per trainer step")
    ap.add_argument("--child-timeout", type=int, default=240, help="seconds per subprocess")
    ap.add_argument("--out", default=None,
                    help="write OUT.csv and OUT.md (default: benchmarks/results/train_throughput_<gpu|cpu>)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=29511, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)

    from megasnow.train.metrics import peak_bf16_tflops

    name = torch.cuda.get_device_name() if gpu else "CPU (no GPU: MFU not applicable)"
    peak = peak_bf16_tflops(name) if gpu else None
    out = args.out or os.path.join(REPO, "benchmarks", "results", "train_throughput_" + ("gpu" if gpu else "cpu"))
    header = (f"device: {name}; dense bf16 peak {peak or 'n/a'} TFLOP/s; torch {torch.__version__}; preset "
              f"{args.preset}; {args.warmup} warmup + {args.steps} timed steps; {time.strftime('%Y-%m-%d %H:%M')}")
    log(header)
    log(MFU_CONVENTION)
    try:
        import liger_kernel  # noqa: F401
        have_liger = gpu  # Liger's kernels are Triton GPU kernels
    except ImportError:
        have_liger = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seq in args.seq_lens:
            for i, impl in enumerate(args.impls):
                if impl == "hf-sdpa-liger" and not have_liger:
                    log(f"skip {impl}: " + ("liger-kernel not installed" if gpu else "Liger's kernels need a GPU"))
                    continue
                child_out = os.path.join(tmp, f"{impl}_{seq}.json")
                cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--seq", str(seq), "--child-out",
                       child_out, "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--max-micro-batch", str(args.max_micro_batch), "--port", str(29511 + i),
                       "--activation-checkpointing", args.activation_checkpointing]
                log(f"{impl} seq {seq}:")
                try:
                    subprocess.run(cmd, check=True, timeout=args.child_timeout)
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                    log(f"  {impl} seq {seq} failed: {e}")
                    continue
                with open(child_out) as f:
                    row = json.load(f)
                if row is None:
                    log(f"  {impl} seq {seq}: even micro-batch 1 does not fit")
                    continue
                rows.append(row)
        if args.trainer_steps > 0:
            log("megasnow.train on synthetic tokens:")
            try:
                fitted = [r["micro_batch"] for r in rows if r["impl"] == "megasnow" and r["seq"] == args.seq_lens[0]]
                mbs = args.trainer_micro_batch or (fitted[0] if fitted else 1)
                rows.append(trainer_run(args, gpu, os.path.join(tmp, "trainer"), mbs))
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                log(f"  trainer run failed: {e}")
    text = write_results(out, rows, header)
    log("\n" + text + f"written: {out}.csv, {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
