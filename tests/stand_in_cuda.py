"""A stand-in `cuda` device on a CPU-only machine, for catching device mixes in tests.

Inside `StandInCuda()`, `x.to("cuda")`, `x.cuda()` and factories with `device="cuda"` give CPU
tensors marked as being on the GPU; `.device` reports `cuda:0` for them, every torch call
follows CUDA's rules (all tensor operands on one device, except 0-dim CPU scalars and CPU
index tensors), and `.numpy()` refuses them as CUDA does. The arithmetic runs for real on the
CPU, so code that reads values (`bool(t.all())`, `.tolist()`, boolean indexing) runs too.

Why not FakeTensorMode or `meta`, which also catch mixes: their tensors hold no values, so
grading (token ids to text offsets), the rows-to-score probe (`bool(...)`) and the recipes
(boolean indexing, `int(pairs.sum())`) cannot run on them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
_MARK = "_stand_in_cuda"


class DeviceMixError(RuntimeError):
    """The error CUDA raises when one operation sees tensors on two devices."""


def on_gpu(t: object) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, _MARK, False)


def _is_cuda(device: object) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _mark(out: Any) -> Any:
    def one(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            setattr(t, _MARK, True)
        return t
    return tree_map(one, out)


def _target_device(args: tuple, kwargs: dict) -> torch.device | None:
    """Where `Tensor.to(...)` sends its tensor (None: it stays where it is)."""
    for a in (*args[1:], kwargs.get("device"), kwargs.get("other")):
        if isinstance(a, torch.Tensor):
            return CUDA if on_gpu(a) else a.device
        if isinstance(a, str | torch.device):
            return torch.device(a)
    return None


class StandInCuda(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        prop = getattr(func, "__self__", None)  # a property's getter: a fresh object each time
        if prop is torch.Tensor.device:
            return CUDA if on_gpu(args[0]) else func(*args)
        if prop is torch.Tensor.is_cuda:
            return on_gpu(args[0])
        if prop is torch.Tensor.grad:  # gradients land on their parameter's device
            grad = func(*args)
            return _mark(grad) if on_gpu(args[0]) and grad is not None else grad
        if func is torch.Tensor.numpy and on_gpu(args[0]):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() "
                            "to copy the tensor to host memory first.")
        if func in (torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.to):
            target = CUDA if func is torch.Tensor.cuda else (
                torch.device("cpu") if func is torch.Tensor.cpu else _target_device(args, kwargs))
            if target is None:  # a dtype change only: stays on its device
                out = func(*args, **kwargs)
                return _mark(out) if on_gpu(args[0]) else out
            rest = {k: v for k, v in kwargs.items() if k not in ("device", "other")}
            if func is torch.Tensor.to:
                dtypes = [a for a in args[1:] if isinstance(a, torch.dtype)]
                moved = args[0].to(*dtypes, **rest)
            else:
                moved = args[0]
            out = moved.view_as(moved) if moved is args[0] else moved  # a new object to mark
            return _mark(out) if target.type == "cuda" else out
        self._check_one_device(func, args, kwargs)
        cuda_factory = _is_cuda(kwargs.get("device"))
        if cuda_factory:
            kwargs = {**kwargs, "device": "cpu"}
        out = func(*args, **kwargs)
        leaves, _ = tree_flatten((args, kwargs))
        if cuda_factory or any(on_gpu(t) for t in leaves):
            if isinstance(out, torch.Tensor) and any(out is t for t in leaves if not on_gpu(t)):
                return out  # an in-place op on a CPU tensor (checked above: no GPU operand)
            return _mark(out)
        return out

    @staticmethod
    def _check_one_device(func, args: tuple, kwargs: dict) -> None:  # noqa: ANN001
        operands = args
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            operands = (args[0], *args[2:])  # CUDA accepts CPU index tensors
        leaves, _ = tree_flatten((operands, kwargs))
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        gpu = [t for t in tensors if on_gpu(t)]
        cpu = [t for t in tensors if not on_gpu(t) and t.dim() > 0]
        if gpu and cpu:
            raise DeviceMixError(
                f"{getattr(func, '__name__', func)}: expected all tensors to be on the same "
                f"device, but found at least two devices, cuda:0 and cpu "
                f"(cpu shapes {[tuple(t.shape) for t in cpu]})")
