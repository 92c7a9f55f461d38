"""The optical product's matrix multiply, with the read-out fused into its epilogue.

Operands arrive already quantized (their quantization is a cheap
elementwise pass that also yields the tensors backward needs). The kernel
multiplies them with fp32 accumulation and, before anything is written,
records the product's min and max for the running output range, adds the
per-element dither, quantizes to the output range and adds the bias, so the
product is written once, in the compute dtype. A raw mode writes the fp32
product instead (for output ranges taken from quantiles).

Batches (attention heads) are folded into the one-dimensional grid, and
tile origins are 64-bit (offsets inside a tile 32-bit, which keeps register
use down), so no tensor size is too large. Tile shapes are autotuned per
power-of-two size class rather than per exact shape, so that a growing
attention context does not re-tune at every generated token.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl
import triton.testing

from newcompute_optical.kernels import numerics
from newcompute_optical.kernels.readout import Noise, Readout

BLOCK_K = 64
OUTPUT_ROW: tl.constexpr = tl.constexpr(2)
"""The output role's row in a product's 3 × 2 statistics (input, weight, output)."""


def _configs() -> list[triton.Config]:
    shapes = [(128, 256, 3, 8), (128, 128, 3, 8), (64, 256, 4, 8), (128, 64, 4, 4)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "GROUP_M": 8}, num_stages=stages, num_warps=warps)
        for m, n, stages, warps in shapes
    ]


@triton.jit(do_not_specialize=["key0", "key1", "size_class_m", "size_class_n", "size_class_k"])
def gemm_kernel(
    a_ptr,
    b_ptr,
    out_ptr,
    bias_ptr,
    range_ptr,
    stats_ptr,
    calls_ptr,
    M,
    N,
    K,
    stride_ab,
    stride_am,
    stride_ak,
    stride_bb,
    stride_bn,
    stride_bk,
    top,
    key0,
    key1,
    size_class_m,
    size_class_n,
    size_class_k,
    READOUT: tl.constexpr,
    STATS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    per_batch = grid_m * grid_n
    batch = (pid // per_batch).to(tl.int64)
    tile = pid % per_batch
    group = GROUP_M * grid_n
    first_m = (tile // group) * GROUP_M
    group_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % group) % group_m
    pid_n = (tile % group) // group_m

    # 64-bit tile origins, 32-bit offsets inside the tile: no size limit, few registers
    first_row = pid_m * BLOCK_M
    first_col = pid_n * BLOCK_N
    a_ptrs = a_ptr + (batch * stride_ab + first_row.to(tl.int64) * stride_am)
    b_ptrs = b_ptr + (batch * stride_bb + first_col.to(tl.int64) * stride_bn)
    local_m = tl.minimum(first_row + tl.arange(0, BLOCK_M), M - 1) - first_row
    local_n = tl.minimum(first_col + tl.arange(0, BLOCK_N), N - 1) - first_col
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs += local_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs += local_n[None, :] * stride_bn + offs_k[:, None] * stride_bk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    offs_m = first_row + tl.arange(0, BLOCK_M)
    offs_n = first_col + tl.arange(0, BLOCK_N)
    valid = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if STATS:
        numerics.record_range(stats_ptr + 2 * OUTPUT_ROW, acc, valid)
    if READOUT:
        lo, hi, step, inverse = numerics.range_terms(range_ptr, top)
        call, k0, k1 = numerics.noise_inputs(calls_ptr, key0, key1)
        noise = numerics.dither(batch * M + first_row, BLOCK_M, first_col, tl.cdiv(N, 4), call, k0, k1, BLOCK_N)
        y = numerics.quantize_dithered(acc, lo, hi, step, inverse, top, noise)
    else:
        y = acc
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + (batch * M + first_row) * N + (tl.arange(0, BLOCK_M)[:, None] * N + offs_n[None, :])
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=valid)


def short_bench(kernel_call: Callable[[], object], quantiles: list[float]) -> list[float]:
    """Autotuning timings over ~25 ms per tile shape: enough to rank them, short enough for many shapes."""
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)


_tuned_gemm = triton.autotune(
    configs=_configs(), key=["size_class_m", "size_class_n", "size_class_k"], do_bench=short_bench
)(gemm_kernel)
_INTERPRETER_TILE = {"BLOCK_M": 32, "BLOCK_N": 32, "GROUP_M": 2}
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton decides at import whether kernels are interpreted; the interpreter runs one small tile, untuned."""


def input_precision(dtype: torch.dtype) -> str:
    """fp32 operands follow torch's matmul precision setting; 16-bit ones use the tensor cores as is."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def multiply(
    aq: torch.Tensor,
    bq: torch.Tensor,
    out_dtype: torch.dtype,
    *,
    bias: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
    readout: Readout | None = None,
) -> torch.Tensor:
    """``aq @ bqᵀ`` per batch (aq: batch × M × K, bq: batch × N × K) into a new contiguous tensor.

    With ``readout`` the product goes through the noisy read-out, otherwise it
    is written as accumulated; ``stats`` (a product's 3 × 2 statistics)
    receives the product's ``(−min, max)`` in its output row.
    """
    batch, rows, inner = aq.shape
    cols = bq.shape[1]
    out = torch.empty((batch, rows, cols), device=aq.device, dtype=out_dtype)
    value_range, levels, (calls, key0, key1) = readout if readout is not None else (out, 2, Noise(out, 0, 0))
    args = (
        aq,
        bq,
        out,
        bias if bias is not None else out,
        value_range,
        stats if stats is not None else out,
        calls,
        rows,
        cols,
        inner,
        aq.stride(0),
        aq.stride(1),
        aq.stride(2),
        bq.stride(0),
        bq.stride(1),
        bq.stride(2),
        float(levels - 1),
        key0,
        key1,
        *(triton.next_power_of_2(size) for size in (rows, cols, inner)),
    )
    flags = {
        "READOUT": readout is not None,
        "STATS": stats is not None,
        "HAS_BIAS": bias is not None,
        "EVEN_K": inner % BLOCK_K == 0,
        "PRECISION": input_precision(aq.dtype),
        "BLOCK_K": BLOCK_K,
    }

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (batch * triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cols, meta["BLOCK_N"]),)

    if INTERPRETING:
        gemm_kernel[grid(_INTERPRETER_TILE)](*args, **flags, **_INTERPRETER_TILE)
    else:
        _tuned_gemm[grid](*args, **flags, enable_fp_fusion=False)
    return out
