"""Shared Triton plumbing for megasnow.kernels: guarded import, impl resolution, launch helpers.

Triton is optional: without it the kernel definitions still parse (against a stub) and only the
pure-torch references run.
"""

import functools
import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    HAS_TRITON = False

    class _Stub:
        """Stands in for triton / triton.language so `@triton.jit` and `tl.constexpr` annotations parse."""

        constexpr = object
        int64 = float32 = None

        @staticmethod
        def jit(fn=None, **_kwargs):
            return fn if fn is not None else (lambda f: f)

        @staticmethod
        def next_power_of_2(n: int) -> int:
            return 1 << max(0, (int(n) - 1).bit_length())

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-a // b)

    triton = tl = _Stub()

IMPLS = ("auto", "triton", "reference")


def resolve_impl(impl: str, device) -> str:
    """Return "triton" or "reference" for `impl` on `device`.

    "auto" picks Triton on CUDA and the reference elsewhere. "triton" on CPU runs Triton's interpreter
    (the same kernel code, slowly; tests use it with TRITON_INTERPRET=1) and is an error without Triton.
    """
    if impl not in IMPLS:
        raise ValueError(f"kernel impl must be one of {IMPLS}, got {impl!r}")
    device = torch.device(device)
    if impl == "reference":
        return "reference"
    if impl == "auto":
        return "triton" if (HAS_TRITON and device.type == "cuda") else "reference"
    if not HAS_TRITON:
        raise RuntimeError("impl='triton' requested but triton is not installed; use impl='reference' or 'auto'")
    if device.type not in ("cuda", "cpu"):
        raise RuntimeError(f"impl='triton' supports CUDA tensors (or CPU via the interpreter), got {device.type}")
    return "triton"


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class _LateInterpreted:
    """Runs a kernel compiled-for-GPU (a JITFunction) in Triton's interpreter.

    Used when the kernel module was imported before TRITON_INTERPRET=1 was set: then the kernel and
    triton.language's own @jit helpers (tl.sum, tl.max, ...) are JITFunctions, which refuse to be
    called from Python. During the launch we route such calls to the interpreter, as an
    InterpretedFunction would.
    """

    def __init__(self, kernel):
        from triton.runtime.interpreter import InterpretedFunction

        self.kernel = kernel
        self.interpreted = InterpretedFunction(kernel.fn)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction

            saved = JITFunction.__call__
            JITFunction.__call__ = lambda jit_fn, *a, **k: InterpretedFunction(jit_fn.fn)(*a, **k)
            try:
                return self.interpreted[grid](*args, **kwargs)
            finally:
                JITFunction.__call__ = saved

        return launch


@functools.lru_cache(maxsize=None)
def _interpreted(kernel):
    return _LateInterpreted(kernel)


def kernel_for(kernel, device: torch.device):
    """The launchable form of `kernel` for tensors on `device`.

    On CUDA that is the compiled kernel. On CPU it is Triton's interpreter: kernels decorated while
    TRITON_INTERPRET=1 already are interpreted; otherwise (the module was imported before the variable
    was set) we run the kernel's Python function in the interpreter here, so impl="triton" on CPU
    works whatever the import order.
    """
    if device.type == "cuda" or not hasattr(kernel, "fn") or type(kernel).__name__ == "InterpretedFunction":
        return kernel
    return _interpreted(kernel)


def row_block_settings(n_cols: int, max_block: int = 65536):
    """Block size (power of two covering a row) and warp count for one-row-per-program kernels."""
    block = triton.next_power_of_2(n_cols)
    if block > max_block:
        raise ValueError(f"row of {n_cols} elements exceeds the largest fused block ({max_block})")
    num_warps = 4
    if block >= 32768:
        num_warps = 32
    elif block >= 8192:
        num_warps = 16
    elif block >= 2048:
        num_warps = 8
    return block, num_warps


def num_programs_for_partials(n_rows: int, device: torch.device) -> int:
    """How many programs split the rows when each program writes one fp32 partial row (e.g. dW of RMSNorm)."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows, sms * 2))
    return max(1, min(n_rows, 4))
