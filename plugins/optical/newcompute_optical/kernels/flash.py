"""Optical attention in tiles: the scores and probabilities never reach memory.

The definition (:mod:`newcompute_optical.reference`, applied by the core's
``qk`` → scale → mask → fp32 softmax → ``pv`` path) needs every score's
noisy read-out, every probability's quantization and the minimum and maximum
of the whole fp32 score matrix, masked entries included. Ranges used for
quantization are the ones learnt before this call, so none of that needs a
materialised matrix: each tile of scores is recomputed from the quantized
Q and K wherever it is needed, its dither drawn again from the same Philox
counters.

Forward, two kernels over blocks of queries:

1. ``normalizer``: the row maximum and the sum of exponentials of the
   read-out scores (online, as flash attention does), and the score
   statistics, which also cover the tiles that causal masking skips.
2. ``context``: the probabilities, now final (``exp(x − m) · (1 / l)``, then
   rounded to the compute dtype), quantized over their range and multiplied
   with the quantized values; the product is read out in the epilogue. It
   also accumulates the unquantized probabilities times the values, which
   backward needs for the softmax's row terms.

Backward (straight-through, like :mod:`newcompute_optical.ops.product`): one kernel
per block of keys accumulates ``dK`` and ``dV`` over every query head that
reads that key head, one per block of queries ``dQ``; both recompute the
probabilities bit for bit as the forward did.
Every kernel runs with ``enable_fp_fusion=False``, so the shared arithmetic
rounds identically in each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from newcompute_optical.kernels import numerics
from newcompute_optical.kernels.gemm import INTERPRETING, input_precision, short_bench

SCORES_OUT: tl.constexpr = tl.constexpr(4)
"""Offset of the output role's ``(−min, max)`` in a product's 3 × 2 statistics."""



@triton.jit
def _read_out_scores(exact, first_row, BLOCK_M: tl.constexpr, first_col, groups, call, k0, k1,
                     BLOCK_N: tl.constexpr, lo, hi, step, inverse, top, scale, DTYPE: tl.constexpr):
    """Scores as the softmax sees them: read out, rounded to the compute dtype, scaled and rounded again."""
    noise = numerics.dither(first_row, BLOCK_M, first_col, groups, call, k0, k1, BLOCK_N)
    read = numerics.quantize_dithered(exact, lo, hi, step, inverse, top, noise)
    return (read.to(DTYPE).to(tl.float32) * scale).to(DTYPE).to(tl.float32)


@triton.jit
def _kept(rows, cols, Tq, Tk, offset, CAUSAL: tl.constexpr):
    keep = (rows[:, None] < Tq) & (cols[None, :] < Tk)
    if CAUSAL:
        keep = keep & (cols[None, :] <= rows[:, None] + offset)
    return keep


@triton.jit
def _probabilities(x, keep, m, l):
    """``exp(x − m) · (1 / l)`` where kept, 0 elsewhere (fp32), the same expression in every kernel."""
    safe_m = tl.where(m == float("-inf"), 0.0, m)
    return tl.where(keep, tl.exp(x - safe_m[:, None]) * tl.math.div_rn(1.0, l)[:, None], 0.0)


@triton.jit
def _fold_min_max(low, high, x, valid):
    low = tl.minimum(low, tl.min(tl.where(valid, x, float("inf")), axis=1))
    high = tl.maximum(high, tl.max(tl.where(valid, x, float("-inf")), axis=1))
    return low, high


@triton.jit
def _record(stats_ptr, low, high):
    tl.atomic_max(stats_ptr, -tl.min(low, axis=0))
    tl.atomic_max(stats_ptr + 1, tl.max(high, axis=0))


@triton.jit
def _causal_end(first_row, BLOCK_M: tl.constexpr, Tk, offset, CAUSAL: tl.constexpr):
    """One past the last key a block of queries keeps."""
    if CAUSAL:
        return tl.minimum(Tk, first_row + BLOCK_M + offset)
    return Tk


@triton.jit
def _rows_tile(base, index, dims, n, D, stride):
    """Rows ``index`` (all ``dims``) of one head's (token, dim) matrix at ``base``, as (index, dims); zeros outside."""
    return tl.load(base + index[:, None] * stride + dims[None, :], mask=(index[:, None] < n) & (dims[None, :] < D), other=0.0)


@triton.jit
def _cols_tile(base, index, dims, n, D, stride):
    """The same rows, transposed to (dims, index): keys as the scores' right-hand operand."""
    return tl.load(base + index[None, :] * stride + dims[:, None], mask=(index[None, :] < n) & (dims[:, None] < D), other=0.0)


@triton.jit
def _head(ptr, batch, head, stride_batch, stride_head):
    """Where one head of a (batch, head, token, dim) tensor starts."""
    return ptr + batch.to(tl.int64) * stride_batch + head * stride_head


@triton.jit
def _query_block(heads, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """The block of query rows this program owns: (batch·heads + head, batch, head, first row, rows, dims)."""
    bh = tl.program_id(1)
    first = tl.program_id(0) * BLOCK_M
    return bh, bh // heads, bh % heads, first, first + tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_D)


@triton.jit
def _softmax_rows(m_ptr, l_ptr, head_row, rows, Tq):
    """The forward's row maximum and row sum of exponentials for ``rows`` of the head starting at ``head_row``."""
    m = tl.load(m_ptr + head_row + rows, mask=rows < Tq, other=0.0)
    l = tl.load(l_ptr + head_row + rows, mask=rows < Tq, other=1.0)
    return m, l


@triton.jit(do_not_specialize=["key0", "key1", "offset", "size_class"])
def normalizer_kernel(
    q_ptr, k_ptr, m_ptr, l_ptr, range_ptr, stats_ptr, calls_ptr,
    Tq, Tk, D, heads, group, offset, size_class,
    sqb, sqh, sqt, skb, skh, skt,
    top, scale, key0, key1,
    CAUSAL: tl.constexpr, STATS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh, batch, head, first, rows, dims = _query_block(heads, BLOCK_M, BLOCK_D)
    q = _rows_tile(_head(q_ptr, batch, head, sqb, sqh), rows, dims, Tq, D, sqt)
    k_base = _head(k_ptr, batch, head // group, skb, skh)
    lo, hi, step, inverse = numerics.range_terms(range_ptr, top)
    call, k0, k1 = numerics.noise_inputs(calls_ptr, key0, key1)
    groups = tl.cdiv(Tk, 4)
    first_row = bh.to(tl.int64) * Tq + first
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    low = tl.full([BLOCK_M], float("inf"), tl.float32)
    high = tl.full([BLOCK_M], float("-inf"), tl.float32)
    end = _causal_end(first, BLOCK_M, Tk, offset, CAUSAL)
    for start in range(0, end, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        exact = tl.dot(q, _cols_tile(k_base, cols, dims, Tk, D, skt), input_precision=PRECISION)
        if STATS:
            low, high = _fold_min_max(low, high, exact, (rows[:, None] < Tq) & (cols[None, :] < Tk))
        x = _read_out_scores(exact, first_row, BLOCK_M, start, groups, call, k0, k1, BLOCK_N,
                             lo, hi, step, inverse, top, scale, q_ptr.dtype.element_ty)
        x = tl.where(_kept(rows, cols, Tq, Tk, offset, CAUSAL), x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp(m - safe) + tl.sum(tl.exp(x - safe[:, None]), axis=1)
        m = m_new
    if STATS:
        if CAUSAL:
            for start in range(tl.cdiv(end, BLOCK_N) * BLOCK_N, Tk, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                exact = tl.dot(q, _cols_tile(k_base, cols, dims, Tk, D, skt), input_precision=PRECISION)
                low, high = _fold_min_max(low, high, exact, (rows[:, None] < Tq) & (cols[None, :] < Tk))
        _record(stats_ptr + SCORES_OUT, low, high)
    tl.store(m_ptr + bh.to(tl.int64) * Tq + rows, m, mask=rows < Tq)
    tl.store(l_ptr + bh.to(tl.int64) * Tq + rows, l, mask=rows < Tq)


@triton.jit(do_not_specialize=["key0", "key1", "ckey0", "ckey1", "offset", "size_class"])
def context_kernel(
    q_ptr, k_ptr, v_ptr, m_ptr, l_ptr, out_ptr, pv_ptr,
    scores_range_ptr, scores_calls_ptr, probs_range_ptr, out_range_ptr, stats_ptr, calls_ptr,
    Tq, Tk, D, heads, group, offset, size_class,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
    top, scale, key0, key1, ckey0, ckey1,
    CAUSAL: tl.constexpr, STATS: tl.constexpr, SAVE_PV: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh, batch, head, first, rows, dims = _query_block(heads, BLOCK_M, BLOCK_D)
    row_dims = (rows[:, None] < Tq) & (dims[None, :] < D)
    q = _rows_tile(_head(q_ptr, batch, head, sqb, sqh), rows, dims, Tq, D, sqt)
    k_base = _head(k_ptr, batch, head // group, skb, skh)
    v_base = _head(v_ptr, batch, head // group, svb, svh)
    m, l = _softmax_rows(m_ptr, l_ptr, bh.to(tl.int64) * Tq, rows, Tq)
    lo, hi, step, inverse = numerics.range_terms(scores_range_ptr, top)
    p_lo, p_hi, p_step, p_inverse = numerics.range_terms(probs_range_ptr, top)
    call, k0, k1 = numerics.noise_inputs(scores_calls_ptr, key0, key1)
    groups = tl.cdiv(Tk, 4)
    first_row = bh.to(tl.int64) * Tq + first
    DTYPE = q_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc_pv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    low = tl.full([BLOCK_M], float("inf"), tl.float32)
    high = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for start in range(0, _causal_end(first, BLOCK_M, Tk, offset, CAUSAL), BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k = _cols_tile(k_base, cols, dims, Tk, D, skt)
        x = _read_out_scores(tl.dot(q, k, input_precision=PRECISION), first_row, BLOCK_M, start, groups, call, k0, k1, BLOCK_N,
                             lo, hi, step, inverse, top, scale, DTYPE)
        keep = _kept(rows, cols, Tq, Tk, offset, CAUSAL)
        probs = _probabilities(x, keep, m, l).to(DTYPE)
        if STATS:
            low, high = _fold_min_max(low, high, probs.to(tl.float32), (rows[:, None] < Tq) & (cols[None, :] < Tk))
        quantized = numerics.quantize(probs.to(tl.float32), p_lo, p_hi, p_step, p_inverse).to(DTYPE)
        v = _rows_tile(v_base, cols, dims, Tk, D, svt)
        acc = tl.dot(quantized, v, acc, input_precision=PRECISION)
        if SAVE_PV:
            acc_pv = tl.dot(probs, v, acc_pv, input_precision=PRECISION)
    o_lo, o_hi, o_step, o_inverse = numerics.range_terms(out_range_ptr, top)
    if STATS:
        _record(stats_ptr, low, high)
        out_low = tl.full([BLOCK_M], float("inf"), tl.float32)
        out_high = tl.full([BLOCK_M], float("-inf"), tl.float32)
        out_low, out_high = _fold_min_max(out_low, out_high, acc, row_dims)
        _record(stats_ptr + SCORES_OUT, out_low, out_high)
    c_call, c_k0, c_k1 = numerics.noise_inputs(calls_ptr, ckey0, ckey1)
    noise = numerics.dither(first_row, BLOCK_M, 0, tl.cdiv(D, 4), c_call, c_k0, c_k1, BLOCK_D)
    out = numerics.quantize_dithered(acc, o_lo, o_hi, o_step, o_inverse, top, noise)
    out_offsets = batch.to(tl.int64) * sob + head * soh + rows[:, None] * sot + dims[None, :]
    tl.store(out_ptr + out_offsets, out.to(DTYPE), mask=row_dims)
    if SAVE_PV:
        tl.store(pv_ptr + bh.to(tl.int64) * Tq * D + rows[:, None] * D + dims[None, :], acc_pv.to(DTYPE), mask=row_dims)


@triton.jit
def _recompute(q, k, rows, cols, m, l, first_row, BLOCK_M: tl.constexpr, first_col, BLOCK_N: tl.constexpr,
               Tq, Tk, offset, groups, call, k0, k1, lo, hi, step, inverse, top, scale,
               CAUSAL: tl.constexpr, DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """The forward's probabilities for one tile (fp32) and which entries were kept."""
    x = _read_out_scores(tl.dot(q, k, input_precision=PRECISION), first_row, BLOCK_M, first_col, groups, call, k0, k1, BLOCK_N,
                         lo, hi, step, inverse, top, scale, DTYPE)
    keep = _kept(rows, cols, Tq, Tk, offset, CAUSAL)
    return _probabilities(x, keep, m, l), keep


@triton.jit
def _row_terms(do, pv_ptr, rows, dims, Tq, D, first_row_of_head):
    """Softmax backward's ``Σ_j dP_ij · P_ij`` per row, as ``dO_i · (P·Vq)_i`` (fp32)."""
    pv = _rows_tile(pv_ptr + first_row_of_head * D, rows, dims, Tq, D, D)
    return tl.sum(do.to(tl.float32) * pv.to(tl.float32), axis=1)


@triton.jit(do_not_specialize=["key0", "key1", "offset", "size_class"])
def key_grads_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, pv_ptr, m_ptr, l_ptr, dk_ptr, dv_ptr,
    scores_range_ptr, calls_ptr, probs_range_ptr,
    Tq, Tk, D, heads, group, offset, size_class,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sgb, sgh, sgt,
    top, scale, key0, key1,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``dK`` and ``dV`` of one block of keys, summed over the query heads that share it."""
    pid_n = tl.program_id(0)
    bkv = tl.program_id(1)
    kv_heads = heads // group
    batch = bkv // kv_heads
    kv_head = bkv % kv_heads
    first_col = pid_n * BLOCK_N
    cols = first_col + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    k = _cols_tile(_head(k_ptr, batch, kv_head, skb, skh), cols, dims, Tk, D, skt)
    v_t = _cols_tile(_head(v_ptr, batch, kv_head, svb, svh), cols, dims, Tk, D, svt)
    lo, hi, step, inverse = numerics.range_terms(scores_range_ptr, top)
    p_lo, p_hi, p_step, p_inverse = numerics.range_terms(probs_range_ptr, top)
    call, k0, k1 = numerics.noise_inputs(calls_ptr, key0, key1)
    groups = tl.cdiv(Tk, 4)
    DTYPE = q_ptr.dtype.element_ty
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    begin = 0
    if CAUSAL:
        begin = (tl.maximum(first_col - offset, 0) // BLOCK_M) * BLOCK_M
    for member in range(group):
        head = kv_head * group + member
        head_row = (batch * heads + head).to(tl.int64) * Tq
        q_base = _head(q_ptr, batch, head, sqb, sqh)
        do_base = _head(do_ptr, batch, head, sdb, sdh)
        for start in range(begin, Tq, BLOCK_M):
            rows = start + tl.arange(0, BLOCK_M)
            q = _rows_tile(q_base, rows, dims, Tq, D, sqt)
            do = _rows_tile(do_base, rows, dims, Tq, D, sdt)
            m, l = _softmax_rows(m_ptr, l_ptr, head_row, rows, Tq)
            delta = _row_terms(do, pv_ptr, rows, dims, Tq, D, head_row)
            probs, keep = _recompute(q, k, rows, cols, m, l, head_row + start, BLOCK_M, first_col, BLOCK_N,
                                     Tq, Tk, offset, groups, call, k0, k1, lo, hi, step, inverse, top, scale,
                                     CAUSAL, DTYPE, PRECISION)
            quantized = numerics.quantize(probs.to(DTYPE).to(tl.float32), p_lo, p_hi, p_step, p_inverse).to(DTYPE)
            dv = tl.dot(tl.trans(quantized), do, dv, input_precision=PRECISION)
            grad_probs = tl.dot(do, v_t, input_precision=PRECISION)
            grad_scores = tl.where(keep, probs * (grad_probs - delta[:, None]), 0.0) * scale
            dk = tl.dot(tl.trans(grad_scores.to(DTYPE)), q, dk, input_precision=PRECISION)
    out_offsets = batch.to(tl.int64) * sgb + kv_head * sgh + cols[:, None] * sgt + dims[None, :]
    out_mask = (cols[:, None] < Tk) & (dims[None, :] < D)
    tl.store(dk_ptr + out_offsets, dk.to(dk_ptr.dtype.element_ty), mask=out_mask)
    tl.store(dv_ptr + out_offsets, dv.to(dv_ptr.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=["key0", "key1", "offset", "size_class"])
def query_grads_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, pv_ptr, m_ptr, l_ptr, dq_ptr,
    scores_range_ptr, calls_ptr,
    Tq, Tk, D, heads, group, offset, size_class,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sgb, sgh, sgt,
    top, scale, key0, key1,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh, batch, head, first, rows, dims = _query_block(heads, BLOCK_M, BLOCK_D)
    row_dims = (rows[:, None] < Tq) & (dims[None, :] < D)
    q = _rows_tile(_head(q_ptr, batch, head, sqb, sqh), rows, dims, Tq, D, sqt)
    do = _rows_tile(_head(do_ptr, batch, head, sdb, sdh), rows, dims, Tq, D, sdt)
    head_row = bh.to(tl.int64) * Tq
    m, l = _softmax_rows(m_ptr, l_ptr, head_row, rows, Tq)
    delta = _row_terms(do, pv_ptr, rows, dims, Tq, D, head_row)
    k_base = _head(k_ptr, batch, head // group, skb, skh)
    v_base = _head(v_ptr, batch, head // group, svb, svh)
    lo, hi, step, inverse = numerics.range_terms(scores_range_ptr, top)
    call, k0, k1 = numerics.noise_inputs(calls_ptr, key0, key1)
    groups = tl.cdiv(Tk, 4)
    DTYPE = q_ptr.dtype.element_ty
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, _causal_end(first, BLOCK_M, Tk, offset, CAUSAL), BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k_t = _cols_tile(k_base, cols, dims, Tk, D, skt)
        v_t = _cols_tile(v_base, cols, dims, Tk, D, svt)
        probs, keep = _recompute(q, k_t, rows, cols, m, l, head_row + first, BLOCK_M, start, BLOCK_N,
                                 Tq, Tk, offset, groups, call, k0, k1, lo, hi, step, inverse, top, scale,
                                 CAUSAL, DTYPE, PRECISION)
        grad_probs = tl.dot(do, v_t, input_precision=PRECISION)
        grad_scores = tl.where(keep, probs * (grad_probs - delta[:, None]), 0.0) * scale
        dq = tl.dot(grad_scores.to(DTYPE), tl.trans(k_t), dq, input_precision=PRECISION)
    out_offsets = batch.to(tl.int64) * sgb + head * sgh + rows[:, None] * sgt + dims[None, :]
    tl.store(dq_ptr + out_offsets, dq.to(dq_ptr.dtype.element_ty), mask=row_dims)


class Product(NamedTuple):
    """One attention product's device state and noise key, as the kernels read it."""

    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    stats: torch.Tensor
    calls: torch.Tensor
    key0: int
    key1: int


class Saved(NamedTuple):
    """What backward recomputes the probabilities from: the forward's operands, row terms and state."""

    qq: torch.Tensor
    kq: torch.Tensor
    vq: torch.Tensor
    row_max: torch.Tensor
    row_sum: torch.Tensor
    pv: torch.Tensor
    scores_range: torch.Tensor
    probs_range: torch.Tensor
    scores_calls: torch.Tensor


_INTERPRETER_TILE = {"BLOCK_M": 16, "BLOCK_N": 16}


def _configs() -> list[triton.Config]:
    shapes = [(64, 64, 4, 2), (64, 32, 4, 3), (128, 64, 8, 2)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps, num_stages=stages)
        for m, n, warps, stages in shapes
    ]


def _tuned(kernel: triton.runtime.JITFunction) -> Callable[..., object]:
    """The kernel autotuned per head size, mask and context-length class; untuned under the interpreter.

    Tuning runs a kernel several times on the real arguments, which is safe:
    each writes the same outputs every time and its statistics are atomic maxima.
    """
    if INTERPRETING:
        return lambda grid, *args, **kwargs: kernel[grid(_INTERPRETER_TILE)](*args, **kwargs, **_INTERPRETER_TILE)
    tuned = triton.autotune(configs=_configs(), key=["D", "size_class", "CAUSAL"], do_bench=short_bench)(kernel)
    return lambda grid, *args, **kwargs: tuned[grid](*args, **kwargs, enable_fp_fusion=False)


_normalizer = _tuned(normalizer_kernel)
_context = _tuned(context_kernel)
_key_grads = _tuned(key_grads_kernel)
_query_grads = _tuned(query_grads_kernel)


def _head_block(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def forward(
    qq: torch.Tensor,
    kq: torch.Tensor,
    vq: torch.Tensor,
    scores: Product,
    context: Product,
    levels: int,
    scale: float,
    causal: bool,
    training: bool,
    save_pv: bool,
) -> tuple[torch.Tensor, Saved]:
    """Attention over quantized ``qq`` (B × H × Tq × D) and ``kq``, ``vq`` (B × H_kv × Tk × D).

    Returns the read-out context, ``(B, H, Tq, D)`` laid out as ``(B, Tq, H,
    D)`` in memory (what the model's output projection reads), and what
    backward needs. In training the score, probability and context
    statistics are folded into the two products' ``stats``.
    """
    batch, heads, q_len, head_dim = qq.shape
    k_len = kq.shape[2]
    group = heads // kq.shape[1]
    offset = k_len - q_len
    dtype = qq.dtype
    row_max = torch.empty(batch * heads * q_len, device=qq.device, dtype=torch.float32)
    row_sum = torch.empty_like(row_max)
    out = torch.empty(batch, q_len, heads, head_dim, device=qq.device, dtype=dtype).transpose(1, 2)
    pv = torch.empty(batch * heads, q_len, head_dim, device=qq.device, dtype=dtype) if save_pv else qq
    top = float(levels - 1)
    flags = {"CAUSAL": causal, "STATS": training, "PRECISION": input_precision(dtype), "BLOCK_D": _head_block(head_dim)}

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return (triton.cdiv(q_len, meta["BLOCK_M"]), batch * heads)

    size_class = triton.next_power_of_2(k_len)
    _normalizer(
        grid,
        qq, kq, row_max, row_sum, scores.ranges[2], scores.stats, scores.calls,
        q_len, k_len, head_dim, heads, group, offset, size_class,
        *_strides(qq), *_strides(kq),
        top, scale, scores.key0, scores.key1,
        **flags,
    )
    _context(
        grid,
        qq, kq, vq, row_max, row_sum, out, pv,
        scores.ranges[2], scores.calls, context.ranges[0], context.ranges[2], context.stats, context.calls,
        q_len, k_len, head_dim, heads, group, offset, size_class,
        *_strides(qq), *_strides(kq), *_strides(vq), *_strides(out),
        top, scale, scores.key0, scores.key1, context.key0, context.key1,
        SAVE_PV=save_pv, **flags,
    )
    saved = Saved(
        qq, kq, vq, row_max, row_sum, pv, scores.ranges[2].clone(), context.ranges[0].clone(), scores.calls.clone()
    )
    return out, saved


def backward(
    grad: torch.Tensor,
    saved: Saved,
    scores_key: tuple[int, int],
    levels: int,
    scale: float,
    causal: bool,
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Straight-through ``(dQ, dK, dV)`` in ``dtypes``; a key head's gradients sum over its query heads."""
    qq, kq, vq = saved.qq, saved.kq, saved.vq
    batch, heads, q_len, head_dim = qq.shape
    kv_heads, k_len = kq.shape[1], kq.shape[2]
    grad = grad.to(qq.dtype)
    if grad.stride(-1) != 1:
        grad = grad.contiguous()
    q_dtype, k_dtype, v_dtype = dtypes
    grad_q = torch.empty(batch, heads, q_len, head_dim, device=qq.device, dtype=q_dtype)
    grad_k = torch.empty(batch, kv_heads, k_len, head_dim, device=qq.device, dtype=k_dtype)
    grad_v = torch.empty(batch, kv_heads, k_len, head_dim, device=qq.device, dtype=v_dtype)
    shared = (
        q_len, k_len, head_dim, heads, heads // kv_heads, k_len - q_len, triton.next_power_of_2(k_len),
        *_strides(qq), *_strides(kq), *_strides(vq), *_strides(grad),
    )
    tail = (float(levels - 1), scale, *scores_key)
    flags = {"CAUSAL": causal, "PRECISION": input_precision(qq.dtype), "BLOCK_D": _head_block(head_dim)}
    _key_grads(
        lambda meta: (triton.cdiv(k_len, meta["BLOCK_N"]), batch * kv_heads),
        qq, kq, vq, grad, saved.pv, saved.row_max, saved.row_sum, grad_k, grad_v,
        saved.scores_range, saved.scores_calls, saved.probs_range,
        *shared, *_strides(grad_k), *tail, **flags,
    )
    _query_grads(
        lambda meta: (triton.cdiv(q_len, meta["BLOCK_M"]), batch * heads),
        qq, kq, vq, grad, saved.pv, saved.row_max, saved.row_sum, grad_q,
        saved.scores_range, saved.scores_calls,
        *shared, *_strides(grad_q), *tail, **flags,
    )
    return grad_q, grad_k, grad_v
