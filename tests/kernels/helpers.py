"""Shared assertions for kernel tests: tolerances by dtype, forward + gradient comparison of two impls."""

import torch

TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def assert_close_by_dtype(actual, expected, dtype=None, msg=""):
    tol = TOLERANCES[dtype or expected.dtype]
    assert not torch.isnan(actual).any(), f"{msg}: NaN in output (an element was never written?)"
    torch.testing.assert_close(actual.float(), expected.float(), **tol, msg=lambda m: f"{msg}: {m}")


def run_with_grads(fn, inputs, n_grad=None, grad_out_seed=7):
    """Call fn(*inputs) on fresh leaf copies, backprop a fixed random cotangent; return (outputs, grads).

    Gradients are taken wrt the floating inputs among the first n_grad (default: all)."""
    n_grad = len(inputs) if n_grad is None else n_grad
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point() and i < n_grad) for i, x in enumerate(inputs)]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(grad_out_seed)  # a CPU generator: the same cotangent on every device
    loss = sum((o.float() * torch.randn(o.shape, generator=gen, device="cpu").to(o.device)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], [x.grad for x in leaves if x.requires_grad]


def assert_same_function(fn_a, fn_b, inputs, dtype, msg="", n_grad=None):
    """fn_a and fn_b agree on outputs and on the gradient of every floating input (of the first n_grad)."""
    outs_a, grads_a = run_with_grads(fn_a, inputs, n_grad)
    outs_b, grads_b = run_with_grads(fn_b, inputs, n_grad)
    for i, (a, b) in enumerate(zip(outs_a, outs_b)):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{msg}: output {i} {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert_close_by_dtype(a, b, dtype, f"{msg} output {i}")
    assert len(grads_a) == len(grads_b)
    for i, (a, b) in enumerate(zip(grads_a, grads_b)):
        assert a is not None and b is not None, f"{msg}: gradient {i} missing"
        assert a.dtype == b.dtype, f"{msg}: gradient {i} dtype {a.dtype} vs {b.dtype}"
        assert_close_by_dtype(a, b, dtype, f"{msg} grad {i}")


class LargeAllocations:
    """TorchDispatchMode recording every op (forward or backward) that produces a new tensor of at least
    `min_numel` elements: [(op name, dtype)]. The Triton interpreter's host copies (set_/copy_ of storages)
    and views are not allocations of the kernel and are ignored."""

    _IGNORED = ("aten.set_", "aten.copy_", "aten.detach", "aten.view", "aten._unsafe_view", "aten.t.", "aten.slice",
                "aten.alias", "aten.as_strided", "aten.expand", "aten.transpose", "aten.select", "aten.reshape")

    def __init__(self, min_numel: int):
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = str(func)
                if not name.startswith(recorder._IGNORED):
                    for t in out if isinstance(out, (tuple, list)) else (out,):
                        if isinstance(t, torch.Tensor) and t.numel() >= min_numel:
                            recorder.seen.append((name, t.dtype))
                return out

        self.seen = []
        self._mode = _Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)
