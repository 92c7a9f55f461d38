"""The quantizers as PyTorch custom ops: Triton on CUDA, the reference everywhere else.

Registering them with ``torch.library`` keeps ``torch.compile`` from tracing
into Triton launches or float64 reference code: the compiler sees one opaque
op with a known output shape, so a compiled model quantizes exactly as an
eager one does. Eager CUDA calls skip the op dispatcher and launch the
kernel directly, since at small shapes the dispatch costs as much as the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from newcompute_mx import reference
from newcompute_mx.formats import FORMATS, ElementFormat
from newcompute_mx.reference import ScaleMode

_NAMESPACE = "newcompute_mx"


def _use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda


def _mx_reference(x: torch.Tensor, fmt: str, axis: int, block_size: int, ceil: bool, out_dtype: torch.dtype) -> torch.Tensor:
    mode: ScaleMode = "ceil" if ceil else "floor"
    return reference.mx_fake_quantize(x, FORMATS[fmt], block_size, axis, mode, out_dtype).contiguous()


@torch.library.custom_op(f"{_NAMESPACE}::mx_quantize", mutates_args=())
def mx_quantize_op(
    x: torch.Tensor, fmt: str, axis: int, block_size: int, ceil: bool, out_dtype: torch.dtype
) -> torch.Tensor:
    if _use_triton(x):
        from newcompute_mx.kernels import mx_pair

        last, rows = (FORMATS[fmt], None) if axis == -1 else (None, FORMATS[fmt])
        out_last, out_rows = mx_pair(x, last, rows, block_size, ceil, out_dtype)
        return out_last if axis == -1 else out_rows
    return _mx_reference(x, fmt, axis, block_size, ceil, out_dtype)


@mx_quantize_op.register_fake
def _(x: torch.Tensor, fmt: str, axis: int, block_size: int, ceil: bool, out_dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(x.shape, dtype=out_dtype, device=x.device)


@torch.library.custom_op(f"{_NAMESPACE}::mx_quantize_pair", mutates_args=())
def mx_quantize_pair_op(
    x: torch.Tensor, last_fmt: str, rows_fmt: str, block_size: int, ceil: bool, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_triton(x):
        from newcompute_mx.kernels import mx_pair

        last, rows = mx_pair(x, FORMATS[last_fmt], FORMATS[rows_fmt], block_size, ceil, out_dtype)
        return last, rows
    return (
        _mx_reference(x, last_fmt, -1, block_size, ceil, out_dtype),
        _mx_reference(x, rows_fmt, -2, block_size, ceil, out_dtype),
    )


@mx_quantize_pair_op.register_fake
def _(
    x: torch.Tensor, last_fmt: str, rows_fmt: str, block_size: int, ceil: bool, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.empty(x.shape, dtype=out_dtype, device=x.device),
        torch.empty(x.shape, dtype=out_dtype, device=x.device),
    )


@torch.library.custom_op(f"{_NAMESPACE}::scaled_cast", mutates_args=())
def scaled_cast_op(x: torch.Tensor, fmt: str, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    if _use_triton(x):
        from newcompute_mx.kernels import scaled_cast

        return scaled_cast(x, FORMATS[fmt], scale, out_dtype)
    return reference.scaled_quantize(x, FORMATS[fmt], scale).to(out_dtype).contiguous()


@scaled_cast_op.register_fake
def _(x: torch.Tensor, fmt: str, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(x.shape, dtype=out_dtype, device=x.device)


PairJob = tuple[torch.Tensor, ElementFormat | None, ElementFormat | None]
"""A tensor and its formats along its last dimension and along its rows (``None``: not wanted)."""


def mx_fake_quantize_pairs(
    jobs: Sequence[PairJob], block_size: int, scale_mode: ScaleMode, out_dtype: torch.dtype
) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """:func:`mx_fake_quantize_pair` for each job; eager CUDA tensors share a kernel launch two at a time.

    A GEMM's two operands are quantized together, which halves the launches
    (and their host time) of an eagerly run layer.
    """
    if jobs and jobs[0][0].is_cuda and not torch.compiler.is_compiling():
        from newcompute_mx.kernels import mx_pairs

        return mx_pairs(jobs, block_size, scale_mode == "ceil", out_dtype)
    return [mx_fake_quantize_pair(x, last, rows, block_size, scale_mode, out_dtype) for x, last, rows in jobs]


def mx_fake_quantize_pair(
    x: torch.Tensor,
    last: ElementFormat | None,
    rows: ElementFormat | None,
    block_size: int,
    scale_mode: ScaleMode,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``x`` MX-quantized along its last dimension with ``last`` and along dim -2 with ``rows``.

    A ``None`` format gives ``None`` (the caller decides what an unquantized
    operand is). One pass over ``x`` when both are wanted.
    """
    ceil = scale_mode == "ceil"
    if x.is_cuda and not torch.compiler.is_compiling() and (last is not None or rows is not None):
        from newcompute_mx.kernels import mx_pair

        return mx_pair(x, last, rows, block_size, ceil, out_dtype)
    if last is not None and rows is not None:
        return mx_quantize_pair_op(x, last.name, rows.name, block_size, ceil, out_dtype)
    if last is not None:
        return mx_quantize_op(x, last.name, -1, block_size, ceil, out_dtype), None
    if rows is not None:
        return None, mx_quantize_op(x, rows.name, -2, block_size, ceil, out_dtype)
    return None, None
