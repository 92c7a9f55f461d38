"""Elementwise quantization of a (batch, rows, cols) tensor of any strides, in one pass.

Used for the operands (deterministic, with the look-up-table snap for the
weight role) and, when a product's output range comes from quantiles, for
the noisy read-out of a product that was first written in fp32. In training
the same pass folds the tile's min and max into the batch statistics, so a
range costs no extra read of the tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from newcompute_optical.kernels import numerics
from newcompute_optical.kernels.readout import Noise

BLOCK_ROWS = 32
BLOCK_COLS = 128


@triton.jit(do_not_specialize=["key0", "key1"])
def quantize_kernel(
    x_ptr,
    out_ptr,
    range_ptr,
    stats_ptr,
    bias_ptr,
    calls_ptr,
    rows,
    cols,
    stride_batch,
    stride_row,
    stride_col,
    top,
    lut_min,
    key0,
    key1,
    LUT: tl.constexpr,
    DITHER: tl.constexpr,
    STATS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STATS_ROW: tl.constexpr,
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
    valid = (first_row + local_r[:, None] < rows) & (first_col + local_c[None, :] < cols)
    origin = batch * stride_batch + first_row.to(tl.int64) * stride_row + first_col.to(tl.int64) * stride_col
    src = x_ptr + origin + (local_r[:, None] * stride_row + local_c[None, :] * stride_col)
    x = tl.load(src, mask=valid, other=0.0).to(tl.float32)
    if STATS:
        numerics.record_range(stats_ptr + 2 * STATS_ROW, x, valid)
    lo, hi, step, inverse = numerics.range_terms(range_ptr, top)
    global_row = batch * rows + first_row
    if DITHER:
        call, k0, k1 = numerics.noise_inputs(calls_ptr, key0, key1)
        noise = numerics.dither(global_row, BLOCK_R, first_col, tl.cdiv(cols, 4), call, k0, k1, BLOCK_C)
        y = numerics.quantize_dithered(x, lo, hi, step, inverse, top, noise)
    else:
        y = numerics.quantize(x, lo, hi, step, inverse)
        if LUT:
            y = numerics.snap_to_lut(y, lo, hi, lut_min)
    if HAS_BIAS:
        cols_here = first_col + local_c
        y += tl.load(bias_ptr + cols_here, mask=cols_here < cols, other=0.0).to(tl.float32)[None, :]
    dst = out_ptr + (global_row * cols + first_col) + (local_r[:, None] * cols + local_c[None, :])
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=valid)


def quantize(
    x: torch.Tensor,
    value_range: torch.Tensor,
    levels: int,
    dtype: torch.dtype,
    *,
    stats: torch.Tensor | None = None,
    stats_row: int = 0,
    lut_min: float | None = None,
    noise: Noise | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quantize ``x`` (batch × rows × cols, any strides) into a new contiguous tensor of ``dtype``.

    ``stats`` (a product's 3 × 2 statistics) receives ``(−min, max)`` of
    ``x`` in row ``stats_row``;
    with ``noise`` this is the noisy read-out instead of the deterministic
    operand quantization.
    """
    batch, rows, cols = x.shape
    out = torch.empty((batch, rows, cols), device=x.device, dtype=dtype)
    grid = (batch * triton.cdiv(rows, BLOCK_ROWS) * triton.cdiv(cols, BLOCK_COLS),)
    calls, key0, key1 = noise if noise is not None else Noise(value_range, 0, 0)
    quantize_kernel[grid](
        x,
        out,
        value_range,
        stats if stats is not None else value_range,
        bias if bias is not None else value_range,
        calls,
        rows,
        cols,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        float(levels - 1),
        lut_min if lut_min is not None else 0.0,
        key0,
        key1,
        LUT=lut_min is not None,
        DITHER=noise is not None,
        STATS=stats is not None,
        HAS_BIAS=bias is not None,
        STATS_ROW=stats_row,
        BLOCK_R=BLOCK_ROWS,
        BLOCK_C=BLOCK_COLS,
        num_warps=4,
        enable_fp_fusion=False,
    )
    return out
