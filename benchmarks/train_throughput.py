#!/usr/bin/env python
"""Training throughput: megasnow vs HuggingFace LlamaForCausalLM (SDPA, and SDPA + Liger-Kernel when installed) on the
same model, sequence length and device (tokens/s, TFLOP/s, MFU of full optimizer steps), then a few steps of the
real trainer (`python -m megasnow.train`) on synthetic data. Sized for one 10-minute GPU command:

  GPU: python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_h200
       (snowcoder-1.3b, seq 8192, bf16; each model built once, then micro-batch 1, 2, 4, 8 while it fits, the
       fastest reported; 2 warmup + 6 timed steps each)
  CPU: python benchmarks/train_throughput.py      (tiny preset, seq 256: proves the script, MFU n/a; torch threads
       follow OMP_NUM_THREADS)

Each implementation runs in its own subprocess: apply_liger_kernel_to_llama patches transformers process-wide and
would contaminate the HF SDPA baseline, and a fresh process also starts with a clean GPU memory pool.
Writes OUT.csv, OUT.json and OUT.md (default OUT: benchmarks/results/train_throughput_<device>).
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

from megasnow.utils.cli import ArgumentParser, fail, run_tool  # noqa: E402

MFU_CONVENTION = ("MFU convention: model FLOPs per token from megasnow/model/flops.py (3 x forward; forward = 2 x "
                  "matmul weights incl. the output head + attention 4 x layers x heads x head_dim x seq as Megatron "
                  "counts it, full S x S, recomputation not counted), divided by the device's dense bf16 peak "
                  "(megasnow/train/metrics.py; H100/H200 SXM 989 TFLOP/s).")


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------ one implementation (child process)
def megasnow_model(model_cfg, bf16):
    """megasnow's model chunks (bf16 weights with fp32 masters on a GPU) and its optimizer, built once."""
    from megasnow.parallel.optimizer import build_optimizer
    from megasnow.parallel.parallelize import ParallelConfig, build_model

    pc = ParallelConfig(params_dtype="bf16" if bf16 else "fp32")
    chunks = build_model(model_cfg, pc, seed=0)
    opt = build_optimizer(chunks, lr=1e-4, weight_decay=0.1, clip_grad=1.0)
    return chunks, opt


def megasnow_step_fn(built, model_cfg, mbs, seq, device):
    import torch

    from megasnow.parallel.pipeline.schedules import forward_backward

    chunks, opt = built
    x = torch.randint(0, model_cfg.vocab_size, (mbs, seq + 1), device=device)
    batch = [{"tokens": x[:, :-1], "labels": x[:, 1:]}]

    def step():
        opt.zero_grad()
        forward_backward(chunks, batch)
        opt.step()
    return step


def hf_model(model_cfg, device, liger=False):
    """HF LlamaForCausalLM as its Trainer runs it with bf16=True: fp32 weights (bf16 autocast), fused AdamW."""
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
    with torch.device(device):  # initialise on the device: a 1.3B fp32 init on one CPU thread takes long
        model = LlamaForCausalLM(cfg)
    model.train()
    if model_cfg.activation_checkpointing != "none":
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    return model, opt


def hf_step_fn(built, model_cfg, mbs, seq, device, bf16):
    import torch

    model, opt = built
    x = torch.randint(0, model_cfg.vocab_size, (mbs, seq), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def measure(step, steps, warmup, device):
    """(median step seconds, peak GiB) over `steps` timed steps after `warmup`."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
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
    return statistics.median(times), mem


def run_child(args):
    """Measure one implementation at one sequence length; writes its best row as JSON to args.child_out.

    The model and optimizer are built once; micro-batches 1, 2, 4, ... up to --max-micro-batch run on them in
    turn until one runs out of memory (model building, not stepping, is what costs time at 1.3B)."""
    import torch

    from megasnow.model.config import get_preset
    from megasnow.model.flops import flops_per_token
    from megasnow.train.metrics import peak_bf16_tflops

    gpu = args.device == "cuda"
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
    t0 = time.perf_counter()
    if impl == "megasnow":
        built = megasnow_model(model_cfg, gpu)
    else:
        built = hf_model(model_cfg, device, liger=impl.endswith("liger"))
    log(f"  {impl}: model and optimizer built in {time.perf_counter() - t0:.1f}s")

    best, tried, mbs = None, [], 1
    while mbs <= args.max_micro_batch:  # doubling from 1 while it fits (one size on CPU)
        try:
            if impl == "megasnow":
                step = megasnow_step_fn(built, model_cfg, mbs, seq, device)
            else:
                step = hf_step_fn(built, model_cfg, mbs, seq, device, gpu)
            t, mem = measure(step, args.steps, args.warmup, device)
        except torch.cuda.OutOfMemoryError:
            log(f"  {impl} seq {seq} mbs {mbs}: out of memory")
            tried.append(dict(micro_batch=mbs, oom=True))
            break
        tok_s = mbs * seq / t
        tflops = tok_s * fpt / 1e12
        row = dict(impl=impl, seq=seq, micro_batch=mbs, step_s=t, tokens_per_s=tok_s, tflops=tflops,
                   mfu=(tflops / peak) if peak else None, peak_mem_gib=mem)
        tried.append(row)
        if best is None or tok_s > best["tokens_per_s"]:
            best = row
        log(f"  {impl} seq {seq} mbs {mbs}: {tok_s:,.0f} tok/s  {tflops:.3g} TFLOP/s  "
            f"MFU {'%.1f%%' % (100 * tflops / peak) if peak else 'n/a'}  peak {_gib(mem)}")
        if not gpu:
            break
        mbs *= 2
    if best is not None:
        best = {**best, "tried": tried}
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


FIELDS = ["impl", "seq", "micro_batch", "step_s", "tokens_per_s", "tflops", "mfu", "peak_mem_gib", "note"]


def write_results(out, rows, header):
    """OUT.csv (one row per implementation; a failed one has only `note`), OUT.json (also every micro-batch tried)
    and OUT.md (the table, with each implementation's speed relative to HF SDPA)."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(out + ".json", "w") as f:
        json.dump({"header": header, "mfu_convention": MFU_CONVENTION, "rows": rows}, f, indent=1)
    lines = [header, "", MFU_CONVENTION, "",
             "| implementation | seq | micro-batch | tokens/s | TFLOP/s | MFU | peak memory | vs HF SDPA |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("tokens_per_s") is None:
            lines.append(f"| {r['impl']} | {r['seq']} | - | - | - | - | - | {r.get('note', '')} |")
            continue
        base = next((b["tokens_per_s"] for b in rows if b["impl"] == "hf-sdpa" and b["seq"] == r["seq"]
                     and b.get("tokens_per_s")), None)
        lines.append(f"| {r['impl']} | {r['seq']} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tflops']:.3g} | {'%.1f%%' % (100 * r['mfu']) if r['mfu'] is not None else 'n/a'} | "
                     f"{_gib(r['peak_mem_gib'])} | {'%.2fx' % (r['tokens_per_s'] / base) if base else '-'} |")
    text = "\n".join(lines) + "\n"
    with open(out + ".md", "w") as f:
        f.write(text)
    return text


def main(argv=None):
    ap = ArgumentParser(description=__doc__.split("\n")[0], prog="train_throughput.py")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                    help="auto: CUDA when a GPU is present; the defaults below depend on it")
    ap.add_argument("--preset", default=None, help="model preset (default: snowcoder-1.3b on a GPU, tiny on CPU)")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=None, help="default: 8192 on a GPU, 256 on CPU")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before them (each micro-batch size)")
    ap.add_argument("--max-micro-batch", type=int, default=None,
                    help="micro-batches 1, 2, 4, ... up to this, while they fit (default: 8 on a GPU; CPU runs 1)")
    ap.add_argument("--impls", nargs="+", default=["megasnow", "hf-sdpa", "hf-sdpa-liger"],
                    choices=["megasnow", "hf-sdpa", "hf-sdpa-liger"])
    ap.add_argument("--activation-checkpointing", default="none", choices=["none", "selective", "full"])
    ap.add_argument("--trainer-steps", type=int, default=6, help="steps of python -m megasnow.train (0: skip)")
    ap.add_argument("--trainer-micro-batch", type=int, default=None,
                    help="default: the fastest micro-batch of megasnow in the measurement above")
    ap.add_argument("--trainer-accumulation", type=int, default=2, help="micro-batches per trainer step")
    ap.add_argument("--child-timeout", type=int, default=240, help="seconds per subprocess")
    ap.add_argument("--out", default=None,
                    help="write OUT.csv and OUT.md (default: benchmarks/results/train_throughput_<gpu|cpu>)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=29511, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu")
    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.device = "cuda" if gpu else "cpu"
    args.preset = args.preset or ("snowcoder-1.3b" if gpu else "tiny")
    args.seq_lens = args.seq_lens or ([8192] if gpu else [256])
    args.max_micro_batch = args.max_micro_batch or (8 if gpu else 4)
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
    except Exception:  # not installed, or an installed version that does not import with this torch/triton
        have_liger = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seq in args.seq_lens:
            for i, impl in enumerate(args.impls):
                if impl == "hf-sdpa-liger" and not have_liger:
                    why = ("liger-kernel not installed" if gpu else "Liger's kernels need a GPU")
                    log(f"skip {impl}: {why}")
                    rows.append(dict(impl=impl, seq=seq, note=f"skipped: {why}"))
                    continue
                child_out = os.path.join(tmp, f"{impl}_{seq}.json")
                cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--seq", str(seq), "--child-out",
                       child_out, "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--max-micro-batch", str(args.max_micro_batch), "--port", str(29511 + i),
                       "--activation-checkpointing", args.activation_checkpointing, "--device", args.device]
                log(f"{impl} seq {seq}:")
                try:
                    subprocess.run(cmd, check=True, timeout=args.child_timeout)
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                    log(f"  {impl} seq {seq} failed: {e}")
                    rows.append(dict(impl=impl, seq=seq, note=f"failed: {e}"))
                    continue
                with open(child_out) as f:
                    row = json.load(f)
                if row is None:
                    log(f"  {impl} seq {seq}: even micro-batch 1 does not fit")
                    rows.append(dict(impl=impl, seq=seq, note="out of memory at micro-batch 1"))
                    continue
                rows.append(row)
        if args.trainer_steps > 0:
            log("megasnow.train on synthetic tokens:")
            try:
                fitted = [r["micro_batch"] for r in rows
                          if r["impl"] == "megasnow" and r["seq"] == args.seq_lens[0] and r.get("micro_batch")]
                mbs = args.trainer_micro_batch or (fitted[0] if fitted else 1)
                rows.append(trainer_run(args, gpu, os.path.join(tmp, "trainer"), mbs))
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                log(f"  trainer run failed: {e}")
                rows.append(dict(impl="megasnow.train", seq=args.seq_lens[0], note=f"failed: {e}"))
    text = write_results(out, rows, header)
    log("\n" + text + f"written: {out}.csv, {out}.json, {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
