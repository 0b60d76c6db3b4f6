"""Microbenchmarks of megasnow's fused kernels against PyTorch eager, torch.compile and Liger-Kernel.

For each op and mode (fwd, bwd, fwdbwd) at the 1.3B model's shapes: median time, GB/s or TFLOP/s,
percent of the device-to-device copy bandwidth measured in the same run, and peak extra memory.
Writes a CSV and a PNG. Runs on CPU too (--quick), where the Triton kernels run in the interpreter.

    python tools/bench_kernels.py                       # GPU: tokens 4k..64k, bf16
    python tools/bench_kernels.py --quick               # CPU smoke run at tiny shapes

The CSV is rewritten after every op, so a run that is cut off keeps what it measured so far.
"""

import argparse
import csv
import io
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from megasnow.utils.cli import ArgumentParser, fail, run_tool
from megasnow.utils.device import resolve_device

# torch, triton and megasnow.kernels are imported inside the functions that use them, so that `--help` and
# argument mistakes answer in well under a second (importing torch alone takes seconds).

OPS = ("rms_norm", "swiglu", "rope", "cross_entropy", "linear_cross_entropy", "attention")
MODES = ("fwd", "bwd", "fwdbwd")
PROVIDERS = ("megasnow", "torch_eager", "torch_compile", "liger")
CSV_COLUMNS = (
    "op", "mode", "provider", "tokens", "shape", "dtype", "device", "status", "median_ms", "metric", "value",
    "pct_copy_bw", "peak_extra_mib", "note",
)


@dataclass
class Shapes:
    hidden: int = 2048
    ffn: int = 5632
    vocab: int = 64000
    heads: int = 16
    head_dim: int = 128
    seq_len: int = 8192


@dataclass
class OpCase:
    """One op at one size: how to make inputs, each provider's function, and the work per mode."""

    op: str
    shape: str
    make_inputs: Callable[[], list]  # leaves; floating ones get requires_grad in bwd/fwdbwd
    providers: dict  # provider -> fn(*inputs) -> tensor or tuple of tensors
    metric: str  # "GB/s" (bytes moved) or "TFLOP/s"
    work: dict  # mode -> bytes or flops
    skip: dict = field(default_factory=dict)  # provider -> reason
    notes: dict = field(default_factory=dict)  # provider -> note for the CSV


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------


def median_ms(fn, device, reps: int, grad_to_none=None, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median milliseconds of fn(): triton.testing.do_bench on CUDA (CUDA events, L2 flushed between runs),
    `reps` host-timed calls after one warm-up elsewhere."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                                             return_mode="median"))
    if reps > 1:
        fn()  # warm-up (skipped for single-shot smoke runs)
    times = []
    for _ in range(reps):
        for t in grad_to_none or ():
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn, device):
    """Peak memory allocated while fn runs, above what was allocated before it (CUDA only)."""
    import torch

    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def copy_bandwidth_gbs(device, reps: int) -> float:
    """Device-to-device copy bandwidth (read + write bytes / time): the anchor for memory-bound kernels."""
    import torch

    nbytes = (1 << 30) if device.type == "cuda" else (64 << 20)
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, reps)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def measure(case: OpCase, provider: str, mode: str, device, reps: int, warmup_ms: float = 25, rep_ms: float = 100):
    """(median_ms, peak_extra_mib) of one provider in one mode."""
    import torch

    fn = case.providers[provider]
    inputs = case.make_inputs()
    timing = dict(warmup_ms=warmup_ms, rep_ms=rep_ms)
    if mode == "fwd":
        inputs = [t.detach() for t in inputs]
        with torch.no_grad():
            return (median_ms(lambda: fn(*inputs), device, reps, **timing),
                    peak_extra_mib(lambda: fn(*inputs), device))
    leaves = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
    grad_leaves = [t for t in leaves if t.requires_grad]
    if mode == "bwd":
        outs = [o for o in _outputs(fn(*leaves)) if o.requires_grad]
        grads = [torch.randn_like(o) if o.dim() else torch.ones_like(o) for o in outs]

        def run():
            torch.autograd.backward(outs, grads, retain_graph=True)
    else:
        def run():
            outs = [o for o in _outputs(fn(*leaves)) if o.requires_grad]
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    ms = median_ms(run, device, reps, grad_to_none=grad_leaves, **timing)
    for t in grad_leaves:
        t.grad = None
    return ms, peak_extra_mib(run, device)


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def liger_function(name):
    """(Liger-Kernel autograd Function `module.Class` or None, why it is missing)."""
    try:
        from importlib import import_module

        module, cls = name.rsplit(".", 1)
        return getattr(import_module(f"liger_kernel.ops.{module}"), cls), ""
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "liger_kernel":
            return None, "Liger-Kernel not installed"
        return None, f"Liger-Kernel import failed: {type(e).__name__}: {e}"
    except Exception as e:  # an installed Liger that does not match this torch/triton: say so in the CSV
        return None, f"Liger-Kernel import failed: {type(e).__name__}: {e}"


def build_cases(tokens: int, s: Shapes, dtype, device, want_compile: bool) -> list:
    import torch

    from megasnow.kernels import (apply_rope, attention, cross_entropy, linear_cross_entropy, rms_norm,
                                  rope_cos_sin, swiglu)
    from megasnow.kernels.attention import attention_reference, flash_attn_available
    from megasnow.kernels.cross_entropy import cross_entropy_reference
    from megasnow.kernels.linear_cross_entropy import linear_cross_entropy_reference
    from megasnow.kernels.rms_norm import rms_norm_reference
    from megasnow.kernels.rope import apply_rope_reference
    from megasnow.kernels.swiglu import swiglu_reference

    es = torch.finfo(dtype).bits // 8
    T = tokens
    cases = []

    def randn(*shape, scale=1.0):
        return lambda: (torch.randn(*shape, device=device) * scale).to(dtype)

    def with_compile(providers, reference):
        if want_compile:
            try:
                providers["torch_compile"] = torch.compile(reference)
            except Exception as e:  # reported as this provider's error rows, not a crash of the whole run
                def failed(*_, error=e):
                    raise error
                providers["torch_compile"] = failed
        return providers

    def with_liger(case, name, make_fn):
        if device.type != "cuda":  # Liger's kernels are Triton GPU kernels: do not even import it here
            case.skip.setdefault("liger", "Liger-Kernel needs CUDA")
            return case
        fn, why = liger_function(name)
        if fn is None:
            case.skip.setdefault("liger", why)
        else:
            case.providers["liger"] = make_fn(fn)
        return case

    # RMSNorm: x [T, H]
    x_, w_ = randn(T, s.hidden), randn(s.hidden)
    prov = with_compile({"megasnow": lambda x, w: rms_norm(x, w, impl="triton"),
                         "torch_eager": lambda x, w: rms_norm_reference(x, w)}, rms_norm_reference)
    n = T * s.hidden * es
    cases.append(with_liger(
        OpCase("rms_norm", f"x[{T},{s.hidden}]", lambda: [x_(), w_()], prov, "GB/s",
               {"fwd": 2 * n, "bwd": 3 * n, "fwdbwd": 5 * n}),
        "rms_norm.LigerRMSNormFunction",  # "gemma" casting = our all-fp32 numerics
        lambda f: lambda x, w: f.apply(x, w, 1e-5, 0.0, "gemma", False)))

    # SwiGLU: gate, up [T, F]
    g_ = randn(T, s.ffn)
    prov = with_compile({"megasnow": lambda g, u: swiglu(g, u, impl="triton"),
                         "torch_eager": swiglu_reference}, swiglu_reference)
    n = T * s.ffn * es
    cases.append(with_liger(
        OpCase("swiglu", f"gate,up[{T},{s.ffn}]", lambda: [g_(), g_()], prov, "GB/s",
               {"fwd": 3 * n, "bwd": 5 * n, "fwdbwd": 8 * n}),
        "swiglu.LigerSiLUMulFunction", lambda f: lambda g, u: f.apply(g, u)))

    # RoPE: q, k [B, S, H, D]
    S = min(T, s.seq_len)
    B = max(1, T // S)
    cos, sin = rope_cos_sin(S, s.head_dim, device=device)
    qk_ = randn(B, S, s.heads, s.head_dim)
    prov = with_compile({"megasnow": lambda q, k: apply_rope(q, k, cos, sin, impl="triton"),
                         "torch_eager": lambda q, k: apply_rope_reference(q, k, cos, sin)},
                        lambda q, k: apply_rope_reference(q, k, cos, sin))
    n = 2 * B * S * s.heads * s.head_dim * es
    cases.append(with_liger(  # Liger's layout is [B, H, S, D]; give it that layout natively
        OpCase("rope", f"q,k[{B},{S},{s.heads},{s.head_dim}]", lambda: [qk_(), qk_()], prov, "GB/s",
               {"fwd": 2 * n, "bwd": 2 * n, "fwdbwd": 4 * n}),
        "rope.LigerRopeFunction",
        lambda f: lambda q, k: f.apply(q.transpose(1, 2), k.transpose(1, 2), cos, sin, None, 1, s.head_dim)))

    # Cross entropy: logits [T, V]
    target = torch.randint(0, s.vocab, (T,), device=device)
    logits_ = randn(T, s.vocab, scale=2.0)
    prov = with_compile({"megasnow": lambda lg: cross_entropy(lg, target, impl="triton"),
                         "torch_eager": lambda lg: cross_entropy_reference(lg, target)},
                        lambda lg: cross_entropy_reference(lg, target))
    n = T * s.vocab * es
    # bytes: fwd reads the logits once; bwd reads them and writes the gradient
    cases.append(with_liger(
        OpCase("cross_entropy", f"logits[{T},{s.vocab}]", lambda: [logits_()], prov, "GB/s",
               {"fwd": n, "bwd": 2 * n, "fwdbwd": 3 * n}),
        "cross_entropy.LigerCrossEntropyFunction", lambda f: lambda lg: f.apply(lg, target, None, -100)[0]))

    # Fused linear + cross entropy: hidden [T, H], weight [V, H]
    h_, wv_ = randn(T, s.hidden), randn(s.vocab, s.hidden, scale=0.02)
    prov = with_compile({"megasnow": lambda h, w: linear_cross_entropy(h, w, target, impl="triton"),
                         "torch_eager": lambda h, w: linear_cross_entropy_reference(h, w, target)},
                        lambda h, w: linear_cross_entropy_reference(h, w, target))
    f = 2 * T * s.hidden * s.vocab
    cases.append(with_liger(
        OpCase("linear_cross_entropy", f"h[{T},{s.hidden}] w[{s.vocab},{s.hidden}]",
               lambda: [h_(), wv_()], prov, "TFLOP/s", {"fwd": f, "bwd": 2 * f, "fwdbwd": 3 * f}),
        "fused_linear_cross_entropy.LigerFusedLinearCrossEntropyFunction",
        lambda fn: lambda h, w: fn.apply(h, w, target)[0]))

    # Attention (causal): q, k, v [B, S, H, D]; FLOPs counted for the causal half
    qkv_ = randn(B, S, s.heads, s.head_dim)
    prov = {"megasnow": lambda q, k, v: attention(q, k, v, causal=True),
            "torch_eager": lambda q, k, v: attention_reference(q, k, v, causal=True)}
    skip = {"liger": "no Liger attention op", "torch_compile": "not benchmarked (megasnow already dispatches "
            "to flash-attn / SDPA)"}
    if B * s.heads * S * S * 4 * 3 > (8 << 30):
        skip["torch_eager"] = "fp32 reference scores would need > 8 GiB"
    f = 4 * B * s.heads * S * S * s.head_dim / 2
    use_flash = device.type == "cuda" and dtype != torch.float32 and flash_attn_available()
    cases.append(OpCase("attention", f"q,k,v[{B},{S},{s.heads},{s.head_dim}]",
                        lambda: [qkv_(), qkv_(), qkv_()], prov, "TFLOP/s",
                        {"fwd": f, "bwd": 2.5 * f, "fwdbwd": 3.5 * f}, skip,
                        {"megasnow": "flash-attn" if use_flash else "torch SDPA"}))
    return cases


def provider_skip_reason(case: OpCase, provider: str, device, want_compile: bool, compile_here: bool = True,
                         compile_mode: bool = True):
    if provider in case.skip:
        return case.skip[provider]
    if provider == "torch_compile" and not want_compile:
        return "torch.compile off (CPU default; pass --compile)"
    if provider == "torch_compile" and not compile_here:
        return "torch.compile not run at this token count (--compile-tokens)"
    if provider == "torch_compile" and not compile_mode:
        return "torch.compile not run in this mode (--compile-modes)"
    return None


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def write_csv(rows, path: Path):
    from megasnow.utils.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_plot(rows, path: Path, copy_gbs: float, device_name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from megasnow.utils.atomic import atomic_write

    ops = [op for op in OPS if any(r["op"] == op for r in rows)]
    fig, axes = plt.subplots(1, len(ops), figsize=(4 * len(ops), 3.6), squeeze=False)
    for ax, op in zip(axes[0], ops):
        metric = ""
        for provider in PROVIDERS:
            pts = sorted((int(r["tokens"]), float(r["value"])) for r in rows
                         if r["op"] == op and r["provider"] == provider and r["mode"] == "fwdbwd"
                         and r["status"] == "ok")
            metric = next((r["metric"] for r in rows if r["op"] == op), metric)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=provider)
        if metric == "GB/s":
            ax.axhline(copy_gbs, color="gray", linestyle="--", label="copy BW")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{op} fwd+bwd")
        ax.set_xlabel("tokens")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle(device_name, fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def _names(text, allowed, flag):
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in chosen if c not in allowed]
    if bad or not chosen:
        fail(f"{flag} {text!r}: unknown {', '.join(bad) or '(empty)'}; choose a comma-separated subset of "
             f"{','.join(allowed)}")
    return chosen


def _token_list(text, flag):
    try:
        tokens = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        tokens = []
    if not tokens or min(tokens) < 1:
        fail(f"{flag} {text!r}: give comma-separated positive token counts, e.g. 4096,16384")
    return tokens


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, prog="bench_kernels.py")
    p.add_argument("--tokens", type=str, default=None,
                   help="comma-separated tokens per micro-batch, measured in this order "
                        "(default 4096,16384,32768,65536; --quick: 16)")
    p.add_argument("--quick", action="store_true", help="tiny shapes (hidden 64, ffn 176, vocab 1000) for CPU/CI")
    p.add_argument("--ops", type=str, default=",".join(OPS),
                   help="comma-separated ops to measure, from: " + ",".join(OPS))
    p.add_argument("--modes", type=str, default=",".join(MODES),
                   help="fwd (no grad), bwd (backward only, graph kept) and/or fwdbwd (both), comma-separated")
    p.add_argument("--providers", type=str, default=",".join(PROVIDERS),
                   help="megasnow (our Triton kernels), torch_eager (the references the tests use), torch_compile "
                        "(those references under torch.compile), liger (Liger-Kernel; CUDA only), comma-separated")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="dtype of the activations")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: CUDA when a GPU is present, else CPU (Triton interpreter)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="benchmark torch.compile of the references (default: on for CUDA, off for CPU)")
    p.add_argument("--compile-tokens", type=str, default=None,
                   help="run torch_compile only at these token counts (each new shape recompiles, seconds each; "
                        "default: every --tokens value)")
    p.add_argument("--compile-modes", type=str, default=",".join(MODES),
                   help="run torch_compile only in these modes (fwd compiles an inference graph of its own; bwd and "
                        "fwdbwd share the training graph)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions on CPU (CUDA uses do_bench)")
    p.add_argument("--warmup-ms", type=float, default=25, help="do_bench warm-up time per measurement (CUDA)")
    p.add_argument("--rep-ms", type=float, default=100, help="do_bench timed repetitions' total time (CUDA)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels"),
                   help="output path prefix: writes PREFIX.csv and PREFIX.png")
    p.add_argument("--no-plot", action="store_true", help="write the CSV only")
    args = p.parse_args(argv)
    args.ops = _names(args.ops, OPS, "--ops")
    args.modes = _names(args.modes, MODES, "--modes")
    args.providers = _names(args.providers, PROVIDERS, "--providers")
    args.compile_modes = _names(args.compile_modes, MODES, "--compile-modes")
    args.tokens = _token_list(args.tokens or ("16" if args.quick else "4096,16384,32768,65536"), "--tokens")
    args.compile_tokens = (None if args.compile_tokens is None
                           else set(_token_list(args.compile_tokens, "--compile-tokens")))
    if args.reps < 1:
        fail(f"--reps {args.reps}: must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = resolve_device(args.device, "--device")
    shapes = Shapes(hidden=64, ffn=176, vocab=1000, heads=2, head_dim=32, seq_len=16) if args.quick else Shapes()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    want_compile = (device.type == "cuda") if args.compile is None else args.compile
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = "cpu (no GPU)" if not torch.cuda.is_available() else "cpu (GPU present, not used)"
        why = "no GPU present" if not torch.cuda.is_available() else "--device cpu"
        print(f"NOTE: {why}: running on CPU, where megasnow's Triton kernels run in Triton's interpreter; "
              "their times are NOT kernel speed (this run only proves the benchmark works)", file=sys.stderr)

    copy_gbs = copy_bandwidth_gbs(device, args.reps)
    print(f"device: {device_name}\ncopy bandwidth: {copy_gbs:.1f} GB/s", file=sys.stderr, flush=True)
    out_csv = args.out.with_suffix(".csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for t in args.tokens:
        compile_here = args.compile_tokens is None or t in args.compile_tokens
        for case in build_cases(t, shapes, dtype, device, want_compile and compile_here):
            if case.op not in args.ops:
                continue
            for mode in args.modes:
                for provider in args.providers:
                    row = dict(op=case.op, mode=mode, provider=provider, tokens=t, shape=case.shape,
                               dtype=args.dtype, device=device_name, metric=case.metric, median_ms="", value="",
                               pct_copy_bw="", peak_extra_mib="", note="")
                    if provider in case.notes:
                        row["note"] = case.notes[provider]
                    elif provider == "megasnow" and device.type != "cuda":
                        row["note"] = "Triton interpreter on CPU: not kernel speed"
                    reason = provider_skip_reason(case, provider, device, want_compile, compile_here,
                                                  mode in args.compile_modes)
                    if reason:
                        rows.append({**row, "status": "skipped", "note": reason})
                        continue
                    try:
                        ms, mem = measure(case, provider, mode, device, args.reps, args.warmup_ms, args.rep_ms)
                    except Exception as e:  # e.g. OOM of an eager baseline, torch.compile failing: record, go on
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        rows.append({**row, "status": "error", "note": f"{type(e).__name__}: {e}"[:200]})
                        print(f"  {case.op} {mode} {provider}: ERROR {type(e).__name__}: {str(e)[:300]}",
                              file=sys.stderr, flush=True)
                        continue
                    work = case.work[mode]
                    value = work / (ms * 1e-3) / (1e9 if case.metric == "GB/s" else 1e12)
                    pct = f"{100 * value / copy_gbs:.1f}" if case.metric == "GB/s" else ""
                    rows.append({**row, "status": "ok", "median_ms": f"{ms:.4f}", "value": f"{value:.4g}",
                                 "pct_copy_bw": pct, "peak_extra_mib": "" if math.isnan(mem) else f"{mem:.1f}"})
                    print(f"  {case.op:22s} {mode:6s} {provider:13s} T={t:<6d} {ms:9.3f} ms  "
                          f"{value:9.4g} {case.metric} {pct and pct + '% copy'}", file=sys.stderr, flush=True)
            write_csv(rows, out_csv)  # after every op: a run cut off keeps what it measured
            if device.type == "cuda":
                torch.cuda.empty_cache()
    write_csv(rows, out_csv)
    measured = sum(r["status"] == "ok" for r in rows)
    errors = sum(r["status"] == "error" for r in rows)
    print(f"wrote {out_csv}: {len(rows)} rows ({measured} measured, {errors} errors, "
          f"{len(rows) - measured - errors} skipped)", file=sys.stderr)
    if not args.no_plot:
        write_plot(rows, args.out.with_suffix(".png"), copy_gbs, device_name)
        print(f"wrote {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
