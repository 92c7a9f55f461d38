"""The definition's arithmetic as Triton device functions, shared by every kernel.

Each helper performs the same fp32 operations, in the same order, as
:mod:`newcompute_optical.reference`, so that a kernel launched with
``enable_fp_fusion=False`` (no multiply-add contraction) reproduces the
reference bit for bit. Rounding half to even uses the 1.5·2²³ trick (exact
for |x| < 2²², which level indices always are) because it is plain fp32
arithmetic on every backend, Triton's CPU interpreter included.
"""

from __future__ import annotations

import triton
import triton.language as tl

INVERSE_2_24: tl.constexpr = tl.constexpr(1.0 / 16777216.0)


@triton.jit
def round_half_even(x):
    return (x + 12582912.0) - 12582912.0


@triton.jit
def range_terms(range_ptr, top):
    """``lo, hi, step, inverse`` of a stored range for ``top = levels − 1``."""
    lo = tl.load(range_ptr).to(tl.float32)
    hi = tl.load(range_ptr + 1).to(tl.float32)
    span = hi - lo
    step = tl.math.div_rn(span, top)
    inverse = tl.where(span > 0.0, tl.math.div_rn(top, span), 0.0)
    return lo, hi, step, inverse


@triton.jit
def quantize(x, lo, hi, step, inverse):
    scaled = (tl.minimum(tl.maximum(x, lo), hi) - lo) * inverse
    return round_half_even(scaled) * step + lo


@triton.jit
def quantize_dithered(x, lo, hi, step, inverse, top, noise):
    scaled = (tl.minimum(tl.maximum(x, lo), hi) - lo) * inverse
    index = tl.minimum(tl.maximum(round_half_even(scaled + noise), 0.0), top)
    return index * step + lo


@triton.jit
def snap_to_lut(x, lo, hi, lut_min):
    threshold = lut_min * tl.maximum(tl.abs(lo), tl.abs(hi))
    small = (x != 0.0) & (tl.abs(x) < threshold)
    return tl.where(small, tl.where(x > 0.0, threshold, -threshold), x)


@triton.jit
def dither(first_row, BLOCK_M: tl.constexpr, col_start, groups, call, key0, key1, BLOCK_N: tl.constexpr):
    """Dither in [−½, ½) for global rows ``first_row`` (int64) + [0, BLOCK_M), columns ``col_start`` + [0, BLOCK_N).

    One Philox call yields four words, which serve four neighbouring
    columns: the tile evaluates Philox on ``BLOCK_N / 4`` counters per row
    and interleaves the words back into column order. The 64-bit counter
    ``row·groups + col/4`` is formed from a per-row origin and a 32-bit
    in-row offset (with the carry), so each element needs 32-bit words only.
    """
    row_origin = (first_row + tl.arange(0, BLOCK_M).to(tl.int64)) * groups + col_start // 4
    row_lo = (row_origin & 0xFFFFFFFF).to(tl.uint32)
    row_hi = (row_origin >> 32).to(tl.uint32)
    col4 = tl.arange(0, BLOCK_N // 4).to(tl.uint32)
    c0 = row_lo[:, None] + col4[None, :]
    c1 = row_hi[:, None] + (c0 < col4[None, :]).to(tl.uint32)
    c2 = tl.zeros_like(c0) + call
    c3 = tl.zeros_like(c0)
    w0, w1, w2, w3 = tl.philox_impl(c0, c1, c2, c3, key0, key1)
    words = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))
    return (words >> 8).to(tl.float32) * INVERSE_2_24 - 0.5


@triton.jit
def noise_inputs(calls_ptr, key0, key1):
    """The call counter's low word and the key, as the uint32 scalars Philox takes."""
    call = (tl.load(calls_ptr) & 0xFFFFFFFF).to(tl.uint32)
    return call, key0.to(tl.uint32), key1.to(tl.uint32)


@triton.jit
def record_range(stats_ptr, x, valid):
    """Fold a tile's min and max into a stats slot holding ``(−min, max)`` (both grow by atomic max)."""
    low = tl.min(tl.min(tl.where(valid, x, float("inf")), axis=1), axis=0)
    high = tl.max(tl.max(tl.where(valid, x, float("-inf")), axis=1), axis=0)
    tl.atomic_max(stats_ptr, -low)
    tl.atomic_max(stats_ptr + 1, high)
