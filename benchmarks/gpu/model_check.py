"""The whole decoder with `kernels: triton` against `kernels: reference` on one device: logits, loss and the gradient
of every parameter, in fp32 and bf16, at the real model's widths (a few layers of it).

Both models get the same seeded weights and the same batch; the Triton side runs every fused kernel (RMSNorm,
SwiGLU, RoPE, fused linear + cross entropy; attention through flash-attn or SDPA), the reference side the plain
torch functions the kernel tests compare against. Errors are ||triton - reference|| / ||reference|| (METHOD.md:
fp32 arithmetic lands far under 1e-3, bf16 operands between 1e-3 and 1e-2); NaN never passes.

    python -m benchmarks.gpu.model_check --device cuda --out OUT.json
"""
import argparse
import json
import math
import sys
import time

import torch

from megasnow.model import LlamaModel, get_preset

# fp32: both sides do fp32 arithmetic (TF32 off, torch's default for matmuls); the difference is summation order.
# bf16: both sides round activations to bf16 at the same points; the kernels keep fp32 inside, the references
# too, but fused and unfused paths round intermediate results differently (a few bf16 ulps, eps 7.8e-3).
TOLERANCES = {"fp32": {"logits": 1e-4, "loss": 1e-5, "grad": 1e-4},
              "bf16": {"logits": 2e-2, "loss": 5e-3, "grad": 3e-2}}


def rel_err(a, b):
    a, b = a.double(), b.double()
    den = b.norm().item()
    return math.inf if not torch.isfinite(a).all() else (a - b).norm().item() / (den if den > 0 else 1.0)


def model_config(preset, layers, seq):
    base = get_preset(preset)
    return base.replace(num_layers=layers, max_seq_len=max(seq, base.max_seq_len))


def run_model(cfg, kernels, dtype, device, weights, tokens, labels):
    model = LlamaModel(cfg.replace(kernels=kernels), init_seed=None)
    model.load_state_dict(weights)  # the same seeded weights for both sides (drawn once, on the CPU)
    model.to(device=device, dtype=dtype)
    with torch.no_grad():
        logits = model(tokens).float()
    loss = model(tokens, labels=labels)
    loss.backward()
    grads = {n: p.grad.detach().float() for n, p in model.named_parameters() if p.grad is not None}
    names = [n for n, _ in model.named_parameters()]
    return logits, loss.detach().float(), grads, names


def check(cfg, weights, dtype_name, device, batch, seq, seed=0):
    dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=gen)
    labels = tokens[:, 1:].clone()
    labels[0, : seq // 8] = -100  # some ignored targets
    tokens, labels = tokens[:, :-1].to(device), labels.to(device)
    t0 = time.perf_counter()
    tri = run_model(cfg, "triton", dtype, device, weights, tokens, labels)
    ref = run_model(cfg, "reference", dtype, device, weights, tokens, labels)
    tol = TOLERANCES[dtype_name]
    grad_errs = {n: rel_err(tri[2][n], ref[2][n]) for n in ref[3] if n in ref[2] and n in tri[2]}
    missing = [n for n in ref[3] if n not in tri[2] or n not in ref[2]]
    worst = max(grad_errs, key=grad_errs.get)
    out = {"dtype": dtype_name, "batch": batch, "seq": seq,
           "logits_rel_err": rel_err(tri[0], ref[0]), "loss_rel_err": rel_err(tri[1], ref[1]),
           "loss": ref[1].item(), "grad_max_rel_err": grad_errs[worst], "grad_worst_param": worst,
           "params_without_grad": missing, "tolerances": tol, "seconds": round(time.perf_counter() - t0, 2)}
    out["ok"] = (out["logits_rel_err"] <= tol["logits"] and out["loss_rel_err"] <= tol["loss"]
                 and out["grad_max_rel_err"] <= tol["grad"] and not missing)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu runs the Triton kernels in the interpreter (set TRITON_INTERPRET=1)")
    p.add_argument("--presets", nargs="+", default=["snowcoder-1.3b", "llama-1b-gqa"],
                   help="model presets (MHA and GQA); only --layers of their layers are built")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--out", required=True, help="results as JSON")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    results = []
    for preset in args.presets:
        cfg = model_config(preset, args.layers, args.seq)
        weights = LlamaModel(cfg, init_seed=3).state_dict()
        for dtype_name in args.dtypes:
            try:
                r = {"preset": preset, "layers": args.layers,
                     **check(cfg, weights, dtype_name, device, args.batch, args.seq)}
            except Exception as e:  # a kernel that fails to compile or launch: record it, check the rest
                r = {"preset": preset, "layers": args.layers, "dtype": dtype_name, "ok": False,
                     "error": f"{type(e).__name__}: {e}"[:500]}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            results.append(r)
            if "error" in r:
                print(f"[model] {preset} x{args.layers} {dtype_name}: ERROR {r['error']}", flush=True)
            else:
                verdict = "ok" if r["ok"] else "OUT OF TOLERANCE"
                print(f"[model] {preset} x{args.layers} {dtype_name} B={args.batch} S={args.seq}: logits "
                      f"{r['logits_rel_err']:.2e}, loss {r['loss_rel_err']:.2e}, worst grad "
                      f"{r['grad_max_rel_err']:.2e} ({r['grad_worst_param']}); tolerances {r['tolerances']}: "
                      f"{verdict} ({r['seconds']}s)", flush=True)
    with open(args.out, "w") as f:
        json.dump({"check": "model kernels triton vs reference", "device": str(device), "results": results}, f,
                  indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
