"""Triton kernels that fuse the memory-bound passes around Newton–Schulz, one launch per block.

The ``torch._foreach_*`` path reads and writes every matrix element about
48 bytes' worth per step: momentum lerp, Nesterov blend into a float32
temporary, cast into the stack, weight decay, update. These kernels need
half of that: :func:`momentum_into_stack` reads the gradient and momentum
once, writes the momentum back and the blend (cast) straight into the
stack slot; :func:`apply_update` reads the weight and the bfloat16
orthogonalised block once and writes the weight.

The arithmetic is the foreach path's, operation for operation: torch's
``lerp`` formula (a fused multiply-add from the nearer end, as torch
computes it on CPU and CUDA), rounding to the momentum's dtype before the
blend, rounding after the decay, and ``addcmul``'s fused multiply-add. In
float32 the two paths agree bit for bit on CPU (Triton's interpreter), which
the tests check.

Each block is addressed by its ``(row, column)`` strides in the stored
tensor, so transposed (GPT-2 ``Conv1D``) and tall blocks need no copy; Triton
specialises strides equal to 1, so the loads coalesce along whichever
dimension is contiguous. The learning rate and decay are read from 0-d
device tensors: a schedule changing them every step neither recompiles nor
synchronises.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

BLOCK = (64, 64)
"""Rows × columns of one program's tile: square, so a tile is 64 contiguous elements in either layout."""

NUM_WARPS = 4


def _lerp_terms(weight: float) -> tuple[float, bool]:
    """torch.lerp's coefficient for ``weight`` and whether it starts from the end (see :func:`_lerp`).

    torch rounds the weight to float32 and, for weights of ½ or more, uses
    ``weight − 1``, which is exact in float32. Computing it here keeps the
    kernel's arithmetic identical under Triton's interpreter, which does
    scalar arithmetic in Python's float64.
    """
    weight32 = struct.unpack("f", struct.pack("f", weight))[0]
    return (weight32 - 1.0, True) if weight32 >= 0.5 else (weight32, False)


@triton.jit
def _lerp(start, end, coefficient, FROM_END: tl.constexpr):
    """torch.lerp with one rounding: ``start + w·(end − start)``, or ``end + (w − 1)·(end − start)`` for w ≥ ½."""
    if FROM_END:
        base = end
    else:
        base = start
    return tl.fma(end - start, coefficient, base)


@triton.jit
def _tile(rows, cols, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = (tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R))[:, None]
    c = (tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C))[None, :]
    return r, c, (r < rows) & (c < cols)


@triton.jit
def _momentum_kernel(
    grad_ptr,
    momentum_ptr,
    stack_ptr,
    rows,
    cols,
    grad_stride_r,
    grad_stride_c,
    momentum_stride_r,
    momentum_stride_c,
    stack_stride_r,
    momentum_coefficient,
    blend_coefficient,
    MOMENTUM_FROM_END: tl.constexpr,
    BLEND_FROM_END: tl.constexpr,
    NESTEROV: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    r, c, inside = _tile(rows, cols, BLOCK_R, BLOCK_C)
    grad = tl.load(grad_ptr + r * grad_stride_r + c * grad_stride_c, mask=inside).to(tl.float32)
    momentum_at = momentum_ptr + r * momentum_stride_r + c * momentum_stride_c
    momentum = tl.load(momentum_at, mask=inside).to(tl.float32)
    momentum = _lerp(momentum, grad, momentum_coefficient, MOMENTUM_FROM_END).to(momentum_ptr.dtype.element_ty)
    tl.store(momentum_at, momentum, mask=inside)
    source = momentum
    if NESTEROV:
        source = _lerp(grad, momentum.to(tl.float32), blend_coefficient, BLEND_FROM_END)
        source = source.to(momentum_ptr.dtype.element_ty)
    tl.store(stack_ptr + r * stack_stride_r + c, source.to(stack_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _update_kernel(
    weight_ptr,
    ortho_ptr,
    scale_ptr,
    neg_lr_ptr,
    decay_ptr,
    rows,
    cols,
    weight_stride_r,
    weight_stride_c,
    ortho_stride_r,
    HAS_DECAY: tl.constexpr,
    TALL: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    r, c, inside = _tile(rows, cols, BLOCK_R, BLOCK_C)
    if TALL:
        scale = tl.load(scale_ptr + c, mask=c < cols)
    else:
        scale = tl.load(scale_ptr + r, mask=r < rows)
    factor = scale * tl.load(neg_lr_ptr)
    ortho = tl.load(ortho_ptr + r * ortho_stride_r + c, mask=inside).to(tl.float32)
    weight_at = weight_ptr + r * weight_stride_r + c * weight_stride_c
    weight = tl.load(weight_at, mask=inside)
    if HAS_DECAY:
        weight = (weight.to(tl.float32) * tl.load(decay_ptr)).to(weight_ptr.dtype.element_ty)
    tl.store(weight_at, tl.fma(ortho, factor, weight.to(tl.float32)).to(weight_ptr.dtype.element_ty), mask=inside)


def _grid(rows: int, cols: int, block: tuple[int, int]) -> tuple[int, int]:
    return triton.cdiv(rows, block[0]), triton.cdiv(cols, block[1])


def momentum_into_stack(
    grads: list[torch.Tensor],
    momenta: list[torch.Tensor],
    stack: torch.Tensor,
    beta: float,
    nesterov: bool,
    block: tuple[int, int] = BLOCK,
) -> None:
    """M ← lerp(M, G, 1 − β) in place, and ``stack[k]`` ← the update source of block k, cast.

    ``grads[k]`` and ``momenta[k]`` are ``(rows, cols)`` views of the stored
    tensors (any strides) matching ``stack[k]``; ``stack`` is contiguous.
    """
    if not stack.is_contiguous():
        raise ValueError(f"the stack must be contiguous, got strides {stack.stride()}")
    rows, cols = stack.shape[1:]
    grid = _grid(rows, cols, block)
    momentum_coefficient, momentum_from_end = _lerp_terms(1.0 - beta)
    blend_coefficient, blend_from_end = _lerp_terms(beta)
    for slot, (grad, momentum) in enumerate(zip(grads, momenta)):
        _momentum_kernel[grid](
            grad,
            momentum,
            stack[slot],
            rows,
            cols,
            *grad.stride(),
            *momentum.stride(),
            stack.stride(1),
            momentum_coefficient,
            blend_coefficient,
            MOMENTUM_FROM_END=momentum_from_end,
            BLEND_FROM_END=blend_from_end,
            NESTEROV=nesterov,
            BLOCK_R=block[0],
            BLOCK_C=block[1],
            num_warps=NUM_WARPS,
        )


def apply_update(
    targets: list[torch.Tensor],
    ortho: torch.Tensor,
    scales: torch.Tensor,
    tall: bool,
    neg_lr: torch.Tensor,
    decay: torch.Tensor | None,
    block: tuple[int, int] = BLOCK,
) -> None:
    """W ← W·decay + (−lr)·(row factor)·O for every block view in ``targets``, one pass over W and O."""
    ortho, scales = ortho.contiguous(), scales.contiguous()
    rows, cols = ortho.shape[1:]
    grid = _grid(rows, cols, block)
    for slot, target in enumerate(targets):
        _update_kernel[grid](
            target,
            ortho[slot],
            scales[slot],
            neg_lr,
            neg_lr if decay is None else decay,
            rows,
            cols,
            *target.stride(),
            ortho.stride(1),
            HAS_DECAY=decay is not None,
            TALL=tall,
            BLOCK_R=block[0],
            BLOCK_C=block[1],
            num_warps=NUM_WARPS,
        )
