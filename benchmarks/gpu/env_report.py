"""What the GPU suite ran on: the device, driver, CUDA and library versions, the CPU, the C++ extensions, and the two
ceilings every figure is read against (device-to-device copy bandwidth, bf16 matrix-product rate on random data).

    python -m benchmarks.gpu.env_report --out ENV.json [--device cuda]
"""
import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBRARIES = ("torch", "triton", "transformers", "liger_kernel", "flash_attn", "sentencepiece", "numpy", "pyarrow",
             "pybind11", "pydantic")
DISTRIBUTIONS = {"liger_kernel": "liger-kernel", "flash_attn": "flash-attn"}


def version(module):
    """Installed version of `module` from its distribution metadata, without importing it; None when absent."""
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_smi():
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit,pstate"
    try:
        res = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    if res.returncode != 0:
        return {"error": res.stderr.strip()[:300]}
    first = res.stdout.strip().splitlines()[0]
    return dict(zip(query.split(","), (v.strip() for v in first.split(","))))


def extensions():
    out = {}
    for name in ("_binarize", "_dataset_helpers", "_minhash"):
        try:
            mod = importlib.import_module(f"megasnow.{name}")
            out[name] = os.path.basename(mod.__file__)
        except Exception as e:  # report, do not abort: the steps that need it will fail and say so
            out[name] = f"ERROR {type(e).__name__}: {e}"
    return out


def git_commit():
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        if res.returncode == 0:
            return res.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown (no git checkout)"


def cpu():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "load_average": os.getloadavg()[0]}


def ceilings(torch):
    """Measured ceilings (METHOD.md): copy bandwidth of a 1 GiB bf16 copy_ (read + write bytes) and the rate of an
    8192^3 bf16 matrix product on random data, medians of triton.testing.do_bench."""
    import triton.testing

    def copy_gb_s(n=1 << 29):  # bf16 elements: 1 GiB
        src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        dst = torch.empty_like(src)
        ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
        return 2 * 2 * n / (ms * 1e-3) / 1e9

    def matmul_tflops(n=8192):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        ms = triton.testing.do_bench(lambda: a @ b, return_mode="median")
        return 2 * n**3 / (ms * 1e-3) / 1e12

    return {"copy_gb_s": round(copy_gb_s(), 1), "matmul_bf16_tflops": round(matmul_tflops(), 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--mode", default="gpu", help="recorded as is: gpu or dry-run")
    args = p.parse_args(argv)
    env = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": args.mode, "python": platform.python_version(),
           "platform": platform.platform(), "cpu": cpu(), "git_commit": git_commit(),
           "versions": {m: version(m) for m in LIBRARIES}, "extensions": extensions(),
           "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "")}
    import torch

    env["torch_cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    if args.device == "cuda":
        if not torch.cuda.is_available():
            env["error"] = "no CUDA device visible to torch"
        else:
            props = torch.cuda.get_device_properties(0)
            env["device"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                             "multiprocessors": props.multi_processor_count,
                             "memory_gib": round(props.total_memory / 2**30, 1),
                             "cudnn": torch.backends.cudnn.version()}
            env["nvidia_smi"] = nvidia_smi()
            try:
                env["ceilings"] = ceilings(torch)
            except Exception as e:
                env["ceilings"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    else:
        env["device"] = {"name": "cpu (dry run: no GPU used)"}
    with open(args.out, "w") as f:
        json.dump(env, f, indent=1)
    dev = env.get("device", {})
    print(f"[env] device: {dev.get('name')} (capability {dev.get('capability', '-')}, "
          f"{dev.get('memory_gib', '-')} GiB), "
          f"driver {env.get('nvidia_smi', {}).get('driver_version', '-')}, torch {env['versions']['torch']} "
          f"(CUDA {env['torch_cuda']}), triton {env['versions']['triton']}, transformers "
          f"{env['versions']['transformers']}, liger-kernel {env['versions']['liger_kernel']}, python {env['python']}")
    print(f"[env] cpu: {env['cpu']['model']} x {env['cpu']['cores']}; extensions: {env['extensions']}; "
          f"ceilings: {env.get('ceilings', 'n/a (CPU)')}; commit {env['git_commit']}", flush=True)
    return 1 if "error" in env else 0


if __name__ == "__main__":
    sys.exit(main())
