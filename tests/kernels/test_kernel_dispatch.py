"""resolve_impl rules, and that the package imports and runs without CUDA, without Triton, and with
TRITON_INTERPRET=1 set before import (the kernels then are InterpretedFunctions) or after it."""

import importlib
import os
import subprocess
import sys

import pytest
import torch

from megasnow.kernels import resolve_impl


def test_resolve_impl_rules():
    assert resolve_impl("auto", "cpu") == "reference"
    assert resolve_impl("reference", "cpu") == "reference"
    assert resolve_impl("triton", torch.device("cpu")) == "triton"  # the interpreter
    with pytest.raises(ValueError, match="impl must be one of"):
        resolve_impl("cuda", "cpu")


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_import_without_triton_uses_references():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, megasnow.kernels as K\n"
        "assert not K.HAS_TRITON and K.resolve_impl('auto', 'cpu') == 'reference'\n"
        "x = torch.randn(3, 8); y = K.rms_norm(x, torch.ones(8)); assert y.shape == x.shape\n"
        "t = torch.tensor([1, 2, -100])\n"
        "a = K.linear_cross_entropy(x, torch.randn(5, 8), t)\n"  # auto: chunked path, torch CE pieces
        "b = K.cross_entropy(x @ torch.randn(5, 8).t(), t); assert a.ndim == b.ndim == 0\n"
        "q = torch.randn(1, 3, 2, 8); K.attention(*K.apply_rope(q, q, *K.rope_cos_sin(3, 8)), q)\n"
        "try:\n    K.swiglu(x, x, impl='triton')\nexcept RuntimeError as e:\n    print('ERR', e)\n"
    )
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert "ERR impl='triton' requested but triton is not installed" in res.stdout


def test_kernels_are_interpreted_functions_when_the_flag_precedes_import():
    # tests/conftest.py sets TRITON_INTERPRET=1 before anything imports triton, so this session's kernels are
    # InterpretedFunctions (the other path, flag unset at import, is the subprocess test below)
    swiglu_module = importlib.import_module("megasnow.kernels.swiglu")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("session not started with TRITON_INTERPRET=1")
    assert type(swiglu_module._swiglu_forward_kernel).__name__ == "InterpretedFunction"
    gate, up = torch.randn(5, 33), torch.randn(5, 33)
    torch.testing.assert_close(swiglu_module.swiglu(gate, up, impl="triton"), swiglu_module.swiglu_reference(gate, up))


def test_kernels_imported_without_interpreter_flag_still_run_on_cpu():
    # module imported with TRITON_INTERPRET=0: kernels are JITFunctions; impl="triton" on CPU wraps them
    code = (
        "import importlib, torch\n"
        "R = importlib.import_module('megasnow.kernels.rms_norm')\n"
        "assert type(R._rms_norm_forward_kernel).__name__ == 'JITFunction'\n"
        "x, w = torch.randn(3, 40, requires_grad=True), torch.randn(40, requires_grad=True)\n"
        "R.rms_norm(x, w, impl='triton').sum().backward()\n"
        "gx, gw = x.grad, w.grad; x.grad = w.grad = None\n"
        "R.rms_norm_reference(x, w).sum().backward()\n"
        "torch.testing.assert_close(gx, x.grad); torch.testing.assert_close(gw, w.grad)\n"
    )
    res = _run(code, TRITON_INTERPRET="0")
    assert res.returncode == 0, res.stderr
