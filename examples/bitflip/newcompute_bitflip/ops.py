"""The bit flip as an autograd operation, dispatched to the Triton kernel or the PyTorch reference.

The backward pass is straight-through, as upstream defines it: a flipped
element passes its gradient unchanged (the flip models a fault, not a
function to differentiate), and a zeroed element passes none.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

import torch

from newcompute_bitflip.reference import FlipSpec, flip_bits


@cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def dispatch(
    x: torch.Tensor, call: torch.Tensor, spec: FlipSpec, backend: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flip on CUDA with the kernel unless told otherwise; both paths give identical bits."""
    if backend == "auto" and x.is_cuda and triton_available():
        from newcompute_bitflip.kernels import flip_bits_triton

        return flip_bits_triton(x, call, spec)
    return flip_bits(x, call, spec)


class FlipBits(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: torch.Tensor, spec: FlipSpec, backend: str) -> torch.Tensor:
        flipped, keep = dispatch(x, call, spec, backend)
        ctx.zero_out = keep is not None
        if keep is not None:
            ctx.save_for_backward(keep)
        return flipped

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        if not ctx.zero_out:
            return grad, None, None, None
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device)), None, None, None


def flip(x: torch.Tensor, call: torch.Tensor, spec: FlipSpec, backend: str = "auto") -> torch.Tensor:
    """Differentiable bit flip of ``x``; returns ``x`` itself when ``spec`` does nothing."""
    if spec.is_identity:
        return x
    return FlipBits.apply(x, call, spec, backend)
