"""A measured optical call's statistics in two Triton launches, accumulated on the device with no host read.

``readout_terms_kernel`` reads the sampled fp32 product and its read-out
once, tile by tile, and writes each tile's partial terms;
``record_kernel`` (one program) reduces them, turns the seen minima and
maxima (the operands' from one ``torch.aminmax`` each) into range use and
adds everything into the product's float64 telemetry slots. Together they
replace the fifty-odd small PyTorch launches these reductions and the range
use took per measured call, with the same arithmetic (see
:mod:`newcompute_optical.statistics`); only the order in which the sums add
up differs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_ROWS = 32
BLOCK_COLS = 128
TERMS = 6
"""A tile's partial terms: ``−min`` and ``max`` of the product, outputs, clipped, noise power, signal power."""
BLOCK_PARTIALS = 256


@triton.jit
def _min_nan(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def readout_terms_kernel(
    exact_ptr,
    readout_ptr,
    bias_ptr,
    range_ptr,
    partial_ptr,
    rows,
    cols,
    stride_batch,
    stride_row,
    stride_col,
    HAS_BIAS: tl.constexpr,
    TERMS_PER_TILE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles_c = tl.cdiv(cols, BLOCK_C)
    per_batch = tl.cdiv(rows, BLOCK_R) * tiles_c
    batch = (pid // per_batch).to(tl.int64)
    tile = pid % per_batch
    first_row = (tile // tiles_c) * BLOCK_R
    first_col = (tile % tiles_c) * BLOCK_C
    local_r = tl.arange(0, BLOCK_R)
    local_c = tl.arange(0, BLOCK_C)
    col = first_col + local_c
    valid = (first_row + local_r[:, None] < rows) & (col[None, :] < cols)
    # int64 tile origins, int32 offsets inside a tile: a product may hold more than 2³¹ elements
    origin = (batch * rows + first_row) * cols + first_col
    exact = tl.load(exact_ptr + origin + (local_r[:, None] * cols + local_c[None, :]), mask=valid, other=0.0)
    origin = batch * stride_batch + first_row.to(tl.int64) * stride_row + first_col.to(tl.int64) * stride_col
    src = readout_ptr + origin + (local_r[:, None] * stride_row + local_c[None, :] * stride_col)
    readout = tl.load(src, mask=valid, other=0.0).to(tl.float32)
    if HAS_BIAS:
        readout = readout - tl.load(bias_ptr + col, mask=col < cols, other=0.0).to(tl.float32)[None, :]
    error = tl.where(valid, readout - exact, 0.0)
    lo = tl.load(range_ptr)
    hi = tl.load(range_ptr + 1)
    clipped = valid & ((exact < lo) | (exact > hi))
    out = partial_ptr + pid * TERMS_PER_TILE
    tl.store(out, -tl.reduce(tl.where(valid, exact, float("inf")), None, _min_nan))
    tl.store(out + 1, tl.reduce(tl.where(valid, exact, float("-inf")), None, _max_nan))
    tl.store(out + 2, tl.sum(valid.to(tl.float32), axis=None))
    tl.store(out + 3, tl.sum(clipped.to(tl.float32), axis=None))
    tl.store(out + 4, tl.sum(error * error, axis=None))
    tl.store(out + 5, tl.sum(exact * exact, axis=None))


@triton.jit
def _range_use(low, high, range_ptr):
    """``range_use``'s fp32 arithmetic, operation for operation (IEEE division, NaN kept)."""
    lo = tl.load(range_ptr)
    hi = tl.load(range_ptr + 1)
    covered = _max_nan(_min_nan(high, hi) - _max_nan(low, lo), 0.0)
    span = hi - lo
    return tl.where(span > 0.0, tl.math.div_rn(covered, tl.where(span > 0.0, span, 1.0)), 0.0)


@triton.jit
def _add(sums_ptr, slot, value):
    tl.store(sums_ptr + slot, tl.load(sums_ptr + slot) + value.to(tl.float64))


@triton.jit
def record_kernel(
    partial_ptr,
    programs,
    a_low_ptr,
    a_high_ptr,
    b_low_ptr,
    b_high_ptr,
    ranges_ptr,
    sums_ptr,
    TERMS_PER_TILE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    neg_low = tl.full([BLOCK], float("-inf"), tl.float32)
    high = tl.full([BLOCK], float("-inf"), tl.float32)
    outputs = tl.zeros([BLOCK], tl.float64)
    clipped = tl.zeros([BLOCK], tl.float64)
    noise = tl.zeros([BLOCK], tl.float64)
    signal = tl.zeros([BLOCK], tl.float64)
    for start in range(0, programs, BLOCK):
        index = start + tl.arange(0, BLOCK)
        mask = index < programs
        row = partial_ptr + index * TERMS_PER_TILE
        neg_low = _max_nan(neg_low, tl.load(row, mask=mask, other=float("-inf")))
        high = _max_nan(high, tl.load(row + 1, mask=mask, other=float("-inf")))
        outputs += tl.load(row + 2, mask=mask, other=0.0).to(tl.float64)
        clipped += tl.load(row + 3, mask=mask, other=0.0).to(tl.float64)
        noise += tl.load(row + 4, mask=mask, other=0.0).to(tl.float64)
        signal += tl.load(row + 5, mask=mask, other=0.0).to(tl.float64)
    exact_low = -tl.reduce(neg_low, 0, _max_nan)
    exact_high = tl.reduce(high, 0, _max_nan)
    a_use = _range_use(tl.load(a_low_ptr).to(tl.float32), tl.load(a_high_ptr).to(tl.float32), ranges_ptr)
    b_use = _range_use(tl.load(b_low_ptr).to(tl.float32), tl.load(b_high_ptr).to(tl.float32), ranges_ptr + 2)
    out_use = _range_use(exact_low, exact_high, ranges_ptr + 4)
    _add(sums_ptr, 0, tl.full([], 1.0, tl.float64))
    _add(sums_ptr, 1, a_use)
    _add(sums_ptr, 2, b_use)
    _add(sums_ptr, 3, out_use)
    _add(sums_ptr, 4, tl.sum(outputs, axis=0))
    _add(sums_ptr, 5, tl.sum(clipped, axis=0))
    _add(sums_ptr, 6, tl.sum(noise, axis=0))
    _add(sums_ptr, 7, tl.sum(signal, axis=0))


def record(
    sums: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    exact: torch.Tensor,
    readout: torch.Tensor,
    bias: torch.Tensor | None,
    ranges: torch.Tensor,
) -> None:
    """Add one call's terms into ``sums`` (the 8 float64 slots of :data:`newcompute_optical.statistics.SLOTS`).

    ``exact``: the contiguous fp32 product (batch × rows × cols) of the sampled rows; ``readout``: their
    read-out, same shape, any strides; ``ranges``: the 3 × 2 fp32 ``(lo, hi)`` ranges the call used.
    """
    batch, rows, cols = exact.shape
    programs = batch * triton.cdiv(rows, BLOCK_ROWS) * triton.cdiv(cols, BLOCK_COLS)
    partials = torch.empty((programs, TERMS), device=exact.device, dtype=torch.float32)
    readout_terms_kernel[(programs,)](
        exact,
        readout,
        bias if bias is not None else ranges,
        ranges[2],
        partials,
        rows,
        cols,
        readout.stride(0),
        readout.stride(1),
        readout.stride(2),
        HAS_BIAS=bias is not None,
        TERMS_PER_TILE=TERMS,
        BLOCK_R=BLOCK_ROWS,
        BLOCK_C=BLOCK_COLS,
        num_warps=4,
        enable_fp_fusion=False,
    )
    a_low, a_high = torch.aminmax(a)
    b_low, b_high = torch.aminmax(b)
    record_kernel[(1,)](
        partials,
        programs,
        a_low,
        a_high,
        b_low,
        b_high,
        ranges,
        sums,
        TERMS_PER_TILE=TERMS,
        BLOCK=BLOCK_PARTIALS,
        num_warps=4,
    )
