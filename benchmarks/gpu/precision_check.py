"""bf16 against fp32 training: two short runs of the real trainer (`python -m megasnow.train`) on real code tokens,
identical but for train.dtype, whose loss curves must agree step by step within a stated tolerance.

Same data order, same init (seeded), same schedule; the only difference is the compute dtype (bf16 weights and
activations with fp32 master weights, against fp32 everywhere). Passes when every step's |loss_bf16 - loss_fp32| /
loss_fp32 <= --tolerance, both curves are finite, and the fp32 loss fell by at least --min-drop (so the curve
compared is a learning curve, not a flat line at log(vocab)).

    python -m benchmarks.gpu.precision_check --dataset PREFIX --vocab 32000 --out OUT.json [--device cuda]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Tolerance: bf16 has an 8-bit mantissa (relative rounding 2^-9 = 0.2%) and a short run drifts further as updates
# compound; 3% per step is wide enough for that and far below what a wrong kernel gives (a wrong gradient or
# normalisation shows as a curve that stalls or diverges: tens of percent within a few steps).
DEFAULT_TOLERANCE = 0.03


def run_trainer(work, name, dtype, args, timeout):
    """Train one run; returns its per-step losses (metrics.jsonl)."""
    run_dir = os.path.join(work, name)
    os.makedirs(run_dir, exist_ok=True)
    cfg = {
        "model": {"preset": "tiny", "vocab_size": args.vocab, "hidden_size": args.hidden, "num_layers": args.layers,
                  "num_heads": args.heads, "num_kv_heads": args.heads, "ffn_hidden_size": args.ffn,
                  "max_seq_len": args.seq, "kernels": "auto"},
        "data": {"seq_len": args.seq, "seed": 1234, "blend": [{"path": args.dataset}]},
        "train": {"micro_batch_size": args.micro_batch, "global_batch_size": args.global_batch, "steps": args.steps,
                  "device": args.device, "dtype": dtype, "seed": 1234},
        "schedule": {"style": "cosine", "max_lr": args.lr, "min_lr": args.lr / 10, "warmup_steps": args.warmup},
        "checkpoint": {"dir": None},
        "log": {"dir": os.path.join(run_dir, "log"), "tensorboard": False, "interval": max(1, args.steps // 5)},
    }
    path = os.path.join(run_dir, "run.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    metrics = os.path.join(run_dir, "log", "metrics.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)  # a rerun in the same work folder starts fresh
    t0 = time.perf_counter()
    print(f"[precision] {name}: python -m megasnow.train {path}", flush=True)
    subprocess.run([sys.executable, "-m", "megasnow.train", path], check=True, cwd=ROOT, timeout=timeout)
    from megasnow.train.metrics import read_metrics

    records = read_metrics(metrics)
    print(f"[precision] {name}: {len(records)} steps in {time.perf_counter() - t0:.1f}s", flush=True)
    return [r["loss"] for r in records]


def compare(bf16, fp32, tolerance, min_drop):
    """The verdict dict for two loss curves."""
    n = min(len(bf16), len(fp32))
    finite = all(math.isfinite(x) for x in bf16[:n] + fp32[:n])
    rel = [abs(a - b) / abs(b) for a, b in zip(bf16[:n], fp32[:n])] if finite else []
    drop = (fp32[0] - fp32[n - 1]) / fp32[0] if n and finite else 0.0
    worst = max(range(n), key=lambda i: rel[i]) if rel else None
    ok = finite and n > 1 and len(bf16) == len(fp32) and max(rel) <= tolerance and drop >= min_drop
    return {"steps": n, "finite": finite, "max_rel_diff": max(rel) if rel else None,
            "worst_step": None if worst is None else worst + 1, "mean_rel_diff": sum(rel) / n if rel else None,
            "fp32_loss_drop": drop, "tolerance": tolerance, "min_drop": min_drop, "ok": bool(ok)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="indexed dataset prefix (PREFIX.bin/.idx) of real code tokens")
    p.add_argument("--vocab", type=int, required=True, help="the tokenizer's vocabulary size")
    p.add_argument("--work", required=True, help="folder for the two runs' configs and logs")
    p.add_argument("--out", required=True, help="verdict and both curves as JSON")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=1408)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest allowed per-step |loss_bf16 - loss_fp32| / loss_fp32")
    p.add_argument("--min-drop", type=float, default=0.2, help="the fp32 loss must fall by at least this fraction")
    p.add_argument("--timeout", type=int, default=120, help="seconds per training run")
    args = p.parse_args(argv)
    curves = {}
    for dtype in ("fp32", "bf16"):
        curves[dtype] = run_trainer(args.work, f"train_{dtype}", dtype, args, args.timeout)
    verdict = compare(curves["bf16"], curves["fp32"], args.tolerance, args.min_drop)
    shape = (f"hidden {args.hidden}, {args.layers} layers, {args.heads} heads, ffn {args.ffn}, vocab {args.vocab}, "
             f"seq {args.seq}, global batch {args.global_batch} (micro {args.micro_batch}), {args.steps} steps, "
             f"lr {args.lr} cosine, device {args.device}")
    result = {"check": "bf16 vs fp32 loss curve", "model": shape, **verdict,
              "loss_fp32": curves["fp32"], "loss_bf16": curves["bf16"]}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"[precision] {shape}")
    print(f"[precision] fp32 loss {curves['fp32'][0]:.3f} -> {curves['fp32'][-1]:.3f}; bf16 {curves['bf16'][0]:.3f} "
          f"-> {curves['bf16'][-1]:.3f}; max per-step relative difference {verdict['max_rel_diff']:.4f} at step "
          f"{verdict['worst_step']} (tolerance {args.tolerance}): {'ok' if verdict['ok'] else 'OUT OF TOLERANCE'}")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
