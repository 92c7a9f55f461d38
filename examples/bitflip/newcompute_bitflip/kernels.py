"""The bit flip of :mod:`newcompute_bitflip.reference` as one fused Triton kernel.

One pass over the tensor: load, draw the Philox words with ``tl.philox``
(the same generator, counters and key as the reference), flip, zero out,
store the result and the kept-mask. The call counter is read from device
memory, so no value travels to the host and a step never waits on the GPU.
Importing this module needs Triton; ``TRITON_INTERPRET=1`` runs it on CPU
tensors for testing.
"""

from __future__ import annotations

import torch
from newcompute import missing_dependency

try:
    import triton
    import triton.language as tl
except ImportError as exc:
    raise missing_dependency("triton", "newcompute-bitflip", "the bit-flip Triton kernel") from exc

from newcompute_bitflip.formats import layout_of
from newcompute_bitflip.reference import MAX_ELEMENTS, FlipSpec

BLOCK = 1024
_UINT = {16: tl.uint16, 32: tl.uint32}


@triton.jit
def _random_mask(seed, c0, call, GROUP: tl.constexpr, HALVES: tl.constexpr):
    zero = c0 * 0
    mask = ~zero
    for block in tl.static_range((HALVES + 3) // 4):
        r0, r1, r2, r3 = tl.philox(seed, c0, zero + call, zero + block, zero + GROUP)
        mask = mask & r0
        if 4 * block + 1 < HALVES:
            mask = mask & r1
        if 4 * block + 2 < HALVES:
            mask = mask & r2
        if 4 * block + 3 < HALVES:
            mask = mask & r3
    return mask


@triton.jit
def _bitflip_kernel(
    x_ptr,
    out_ptr,
    keep_ptr,
    call_ptr,
    n_elements,
    seed,
    threshold,
    EXP_HALVES: tl.constexpr,
    FRAC_HALVES: tl.constexpr,
    EXP_GROUP: tl.constexpr,
    FRAC_GROUP: tl.constexpr,
    EXP_BITS: tl.constexpr,
    FRAC_BITS: tl.constexpr,
    UINT: tl.constexpr,
    ZERO_OUT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    inside = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0)
    bits = x.to(UINT, bitcast=True)
    c0 = offsets.to(tl.uint32)
    call = (tl.load(call_ptr) & 0xFFFFFFFF).to(tl.uint32)
    if EXP_HALVES > 0:
        mask = _random_mask(seed, c0, call, EXP_GROUP, EXP_HALVES).to(UINT)
        bits = bits ^ (mask & tl.full((BLOCK_SIZE,), EXP_BITS, UINT))
    if FRAC_HALVES > 0:
        mask = _random_mask(seed, c0, call, FRAC_GROUP, FRAC_HALVES).to(UINT)
        bits = bits ^ (mask & tl.full((BLOCK_SIZE,), FRAC_BITS, UINT))
    y = bits.to(x.dtype, bitcast=True)
    if ZERO_OUT:
        keep = tl.abs(y.to(tl.float32)) < threshold
        y = tl.where(keep, y, tl.zeros_like(y))
        tl.store(keep_ptr + offsets, keep.to(tl.int8), mask=inside)
    tl.store(out_ptr + offsets, y, mask=inside)


def flip_bits_triton(x: torch.Tensor, call: torch.Tensor, spec: FlipSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract and same bits as :func:`newcompute_bitflip.reference.flip_bits`."""
    layout = layout_of(x.dtype)
    if x.numel() >= MAX_ELEMENTS:
        raise ValueError(f"bitflip handles tensors of fewer than 2^32 elements, got {x.numel()}")
    source = x.contiguous()
    out = torch.empty_like(source)
    zero_out = spec.threshold > 0.0
    keep = torch.empty(source.shape, dtype=torch.int8, device=x.device) if zero_out else out
    seed = (spec.key[1] << 32) | spec.key[0]
    _bitflip_kernel[(triton.cdiv(source.numel(), BLOCK),)](
        source,
        out,
        keep,
        call,
        source.numel(),
        seed,
        spec.threshold,
        EXP_HALVES=spec.exp_halves,
        FRAC_HALVES=spec.frac_halves,
        EXP_GROUP=spec.exp_group,
        FRAC_GROUP=spec.frac_group,
        EXP_BITS=layout.sign_exponent,
        FRAC_BITS=layout.fraction,
        UINT=_UINT[layout.width],
        ZERO_OUT=zero_out,
        BLOCK_SIZE=BLOCK,
    )
    return out, keep.view(torch.bool) if zero_out else None
