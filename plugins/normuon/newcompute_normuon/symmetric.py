"""Symmetric matrix products for Newton–Schulz, in Triton: compute half, store twice.

Two of the three products in an iteration have symmetric results: the Gram
matrix A = X·Xᵀ and the polynomial b·A + c·A·A (A·A = A·Aᵀ because A is
symmetric). cuBLAS offers no batched bfloat16 SYRK, so these kernels
compute only the output tiles on and above the diagonal and write each of
them to both places. That halves the multiply-adds of those two products,
a third of all Newton–Schulz work on square matrices, a quarter on 1:2.7
ones; the remaining product X·B has no symmetry and stays on cuBLAS.

One kernel serves both uses: ``C = α·Y·Yᵀ + β·D + δ·I`` for a stack ``Y``
of ``(rows × inner)`` matrices and an optional symmetric ``D``; the ``δ·I``
term carries the iteration's ``a`` so that X ← (a·I + b·A + c·A²)·X is a
single plain product.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from newcompute_normuon.coefficients import Schedule

_CONFIGS = [
    triton.Config({"BLOCK": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK": 128, "BLOCK_K": 64}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK": 128, "BLOCK_K": 32}, num_warps=4, num_stages=5),
    triton.Config({"BLOCK": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
]


@triton.jit
def _symmetric_kernel(
    y_ptr, d_ptr, c_ptr, rows, inner,
    stride_yb, stride_yr, stride_yk, stride_db, stride_dr, stride_dc, stride_cb, stride_cr, stride_cc,
    alpha, beta, diagonal,
    HAS_D: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tile_m = tl.program_id(0)
    tile_n = tl.program_id(1)
    if tile_m > tile_n:
        return
    batch = tl.program_id(2).to(tl.int64)
    offs_m = tile_m * BLOCK + tl.arange(0, BLOCK)
    offs_n = tile_n * BLOCK + tl.arange(0, BLOCK)
    offs_k = tl.arange(0, BLOCK_K)
    y = y_ptr + batch * stride_yb
    left = y + offs_m[:, None] * stride_yr + offs_k[None, :] * stride_yk
    right = y + offs_n[None, :] * stride_yr + offs_k[:, None] * stride_yk
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k in range(0, tl.cdiv(inner, BLOCK_K)):
        remaining = inner - k * BLOCK_K
        a = tl.load(left, mask=(offs_m[:, None] < rows) & (offs_k[None, :] < remaining), other=0.0)
        b = tl.load(right, mask=(offs_n[None, :] < rows) & (offs_k[:, None] < remaining), other=0.0)
        acc = tl.dot(a, b, acc)
        left += BLOCK_K * stride_yk
        right += BLOCK_K * stride_yk
    acc = acc * alpha
    inside = (offs_m[:, None] < rows) & (offs_n[None, :] < rows)
    if HAS_D:
        d = tl.load(d_ptr + batch * stride_db + offs_m[:, None] * stride_dr + offs_n[None, :] * stride_dc, mask=inside)
        acc += beta * d.to(tl.float32)
    if tile_m == tile_n:
        acc += tl.where(offs_m[:, None] == offs_n[None, :], diagonal, 0.0)
    out = acc.to(c_ptr.dtype.element_ty)
    c = c_ptr + batch * stride_cb
    tl.store(c + offs_m[:, None] * stride_cr + offs_n[None, :] * stride_cc, out, mask=inside)
    if tile_m != tile_n:
        mirrored = (offs_n[:, None] < rows) & (offs_m[None, :] < rows)
        tl.store(c + offs_n[:, None] * stride_cr + offs_m[None, :] * stride_cc, tl.trans(out), mask=mirrored)


_tuned = triton.autotune(configs=_CONFIGS, key=["rows", "inner", "HAS_D"])(_symmetric_kernel)


def symmetric_product(
    y: torch.Tensor,
    alpha: float = 1.0,
    addend: torch.Tensor | None = None,
    beta: float = 0.0,
    diagonal: float = 0.0,
    blocks: dict[str, Any] | None = None,
) -> torch.Tensor:
    """``α·Y·Yᵀ + β·D + diagonal·I`` for a ``(batch, rows, inner)`` stack; ``D`` must be symmetric.

    ``blocks`` fixes the tile sizes instead of autotuning them (the Triton
    interpreter, used to check the kernel on CPU, cannot time configurations).
    """
    batch, rows, inner = y.shape
    out = y.new_empty(batch, rows, rows)
    d = addend if addend is not None else out
    args = (y, d, out, rows, inner, *y.stride(), *d.stride(), *out.stride(), alpha, beta, diagonal)

    def grid(meta: dict[str, Any]) -> tuple[int, int, int]:
        tiles = triton.cdiv(rows, meta["BLOCK"])
        return tiles, tiles, batch

    if blocks is None:
        _tuned[grid](*args, HAS_D=addend is not None)
    else:
        _symmetric_kernel[grid](*args, HAS_D=addend is not None, **blocks)
    return out


def orthogonalize_symmetric(
    x: torch.Tensor, schedule: Schedule, blocks: dict[str, Any] | None = None
) -> torch.Tensor:
    """:func:`~newcompute_normuon.newton_schulz.orthogonalize` with the symmetric products in Triton."""
    if x.ndim != 3 or x.size(-2) > x.size(-1):
        raise ValueError(f"expected a (batch, rows, cols) stack with rows <= cols, got shape {tuple(x.shape)}")
    norm = torch.linalg.matrix_norm(x, keepdim=True)
    x = x / (norm * schedule.norm_scale + schedule.eps)
    for a, b, c in schedule.steps:
        gram = symmetric_product(x, blocks=blocks)
        poly = symmetric_product(gram, alpha=c, addend=gram, beta=b, diagonal=a, blocks=blocks)
        x = torch.bmm(poly, x)
    return x
