"""Triton kernels: fused MX quantize-dequantize and the per-tensor FP8 cast.

One pass reads a tile of the operand and writes its quantize-dequantized
copy in the GEMM's dtype, so a simulated MX GEMM costs the real GEMM plus a
memory-bound pass per operand. Every operand of a linear layer is needed
along two axes (the forward GEMM reduces over its last dimension, one
backward GEMM over its rows), so the pair kernel quantizes one loaded tile
both ways and writes two outputs: half the reads of two separate passes.

The arithmetic mirrors :mod:`newcompute_mx.reference` bit for bit, using only
float32 operations that are exact (multiplying by powers of two built from
their bits) plus one rounding done with the classic ``(u + 1.5·2^23) − 1.5·2^23``
trick, which rounds half to even for |u| < 2^22 and needs no libdevice call,
so the same code runs under ``TRITON_INTERPRET=1`` on CPU.

On GPUs with FP8 conversion instructions (compute capability 8.9 and up) the
two FP8 element formats round with the hardware's own round-to-nearest-even
cast instead, and bfloat16 converts natively. That is the same rounding in a
handful of instructions rather than a few dozen integer operations, which
matters because with two outputs per load the generic arithmetic, not
memory, limits the kernel's speed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from newcompute import missing_dependency

try:
    import triton
    import triton.language as tl
except ImportError as exc:
    raise missing_dependency("triton", "newcompute-mx", "the MX Triton kernels (used for CUDA tensors)") from exc

from newcompute_mx.formats import ElementFormat

ROUNDING_MAGIC: tl.constexpr = tl.constexpr(12582912.0)  # 1.5 * 2**23
PAIR_TILE = (32, 128)
PAIR_WARPS = 4
CAST_TILE = 2048


@triton.jit
def _pow2(exponent):
    """2**exponent as float32, for integer exponents in [-126, 127]."""
    return ((exponent + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _exponent_field(x):
    """floor(log2(x)) for positive normal float32 x; -127 for zero and subnormals, 128 for inf/NaN."""
    return ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def _load_float32(pointers, mask, BF16: tl.constexpr, NATIVE: tl.constexpr):
    """Load as float32; without NATIVE, bfloat16 arrives as raw int16 bits and widens by a shift (exact)."""
    if BF16 and not NATIVE:
        bits = tl.load(pointers, mask=mask, other=0).to(tl.int32) << 16
        return bits.to(tl.float32, bitcast=True)
    return tl.load(pointers, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_from_float32(pointers, values, mask, BF16: tl.constexpr, NATIVE: tl.constexpr):
    """Store float32 values; without NATIVE, bfloat16 rounds to nearest even on the bits and stores as int16."""
    if BF16 and not NATIVE:
        bits = values.to(tl.int32, bitcast=True)
        rounded = tl.where(values != values, 0x7FC0, (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
        tl.store(pointers, rounded.to(tl.int16), mask=mask)
    else:
        tl.store(pointers, values.to(pointers.dtype.element_ty), mask=mask)


@triton.jit
def _with_sign_of(magnitude, signed):
    sign = signed.to(tl.int32, bitcast=True) & -2147483648
    return (magnitude.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def _round_to_element(magnitude, mantissa_bits, min_exponent, max_normal):
    """Nearest element value to a non-negative float32: ties to even, inf and overflow saturate.

    NaN inputs give an unspecified value; callers put NaN back themselves.
    """
    exponent = tl.minimum(tl.maximum(_exponent_field(magnitude), min_exponent), 127)
    step = exponent - mantissa_bits
    units = magnitude * _pow2(-step)
    rounded = (units + ROUNDING_MAGIC) - ROUNDING_MAGIC
    return tl.minimum(rounded * _pow2(step), max_normal)


@triton.jit
def _block_maxima(values, AXIS: tl.constexpr):
    """Each block's largest magnitude as float32 bits; at least 0x7F800000 when the block holds a NaN or inf.

    Non-negative floats order like their bit patterns, with inf and then NaN
    above every finite value, so one integer maximum finds both the block's
    amax and whether the block is poisoned.
    """
    return tl.max(values.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=AXIS, keep_dims=True)


@triton.jit
def _shared_exponent(amax, max_exponent, max_normal, CEIL: tl.constexpr):
    """The E8M0 exponent of a block from its amax (see ``reference.shared_exponents``), clamped to [-127, 127]."""
    if CEIL:
        ratio = tl.math.div_rn(amax, tl.zeros_like(amax) + max_normal)
        bits = ratio.to(tl.int32, bitcast=True)
        field = (bits >> 23) & 0xFF
        fraction = bits & 0x7FFFFF
        subnormal = tl.where(fraction > 0x400000, -126, -127)
        shared = tl.where(field == 0, subnormal, field - 127 + (fraction != 0).to(tl.int32))
    else:
        shared = _exponent_field(amax) - max_exponent
    return tl.minimum(tl.maximum(shared, -127), 127)


@triton.jit
def _mx_groups(values, AXIS: tl.constexpr, mantissa_bits, min_exponent, max_exponent, max_normal, CEIL: tl.constexpr):
    """Quantize-dequantize each block (a slice along ``AXIS``) of a float32 tile."""
    top = _block_maxima(values, AXIS)
    shared = _shared_exponent(top.to(tl.float32, bitcast=True), max_exponent, max_normal, CEIL)
    magnitude = tl.abs(values)
    down = (magnitude * tl.where(shared == 127, 0.5, 1.0)) * _pow2(-tl.minimum(shared, 126))
    element = _round_to_element(down, mantissa_bits, min_exponent, max_normal)
    decoded = (element * tl.where(shared == -127, 0.5, 1.0)) * _pow2(tl.maximum(shared, -126))
    return tl.where(top >= 0x7F800000, float("nan"), _with_sign_of(decoded, values))


@triton.jit
def _pow2_scale(exponent):
    """2**exponent as float32 for integer exponents in [-127, 127]; 2**-127 is the subnormal 0x00400000."""
    return tl.where(exponent == -127, 0x00400000, (tl.maximum(exponent, -126) + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _mx_groups_fp8(values, AXIS: tl.constexpr, max_exponent, max_normal, CEIL: tl.constexpr, E4M3: tl.constexpr):
    """``_mx_groups`` for FP8 elements, rounded by the GPU's saturating round-to-nearest-even FP8 cast.

    Both scalings are single multiplications by a power of two: exact here,
    because FP8's smallest subnormal (2^-9, 2^-16) keeps every value that
    survives rounding far above float32's subnormal range. Values are clamped
    to ±max_normal before the cast, so saturation does not depend on the
    cast's own overflow behaviour.
    """
    top = _block_maxima(values, AXIS)
    shared = _shared_exponent(top.to(tl.float32, bitcast=True), max_exponent, max_normal, CEIL)
    down = tl.minimum(tl.maximum(values * _pow2_scale(-shared), -max_normal), max_normal)
    if E4M3:
        element = down.to(tl.float8e4nv).to(tl.float32)
    else:
        element = down.to(tl.float8e5).to(tl.float32)
    return tl.where(top >= 0x7F800000, float("nan"), element * _pow2_scale(shared))


@triton.jit
def _mx_blocks(values, AXIS: tl.constexpr, mantissa_bits, min_exponent, max_exponent, max_normal, CEIL: tl.constexpr, CAST: tl.constexpr):
    """Quantize-dequantize with the generic arithmetic (``CAST`` 0) or the FP8 cast (1: E4M3, 2: E5M2)."""
    if CAST == 0:
        return _mx_groups(values, AXIS, mantissa_bits, min_exponent, max_exponent, max_normal, CEIL)
    return _mx_groups_fp8(values, AXIS, max_exponent, max_normal, CEIL, CAST == 1)


@triton.jit
def _pair_tile(
    index,
    x_ptr,
    last_ptr,
    rows_ptr,
    n_rows,
    n_cols,
    stride_batch,
    stride_row,
    stride_col,
    l_mantissa,
    l_min_exp,
    l_max_exp,
    l_max,
    r_mantissa,
    r_min_exp,
    r_max_exp,
    r_max,
    IN_BF16: tl.constexpr,
    OUT_BF16: tl.constexpr,
    NATIVE: tl.constexpr,
    BLOCK: tl.constexpr,
    CEIL: tl.constexpr,
    LAST: tl.constexpr,
    ROWS: tl.constexpr,
    L_CAST: tl.constexpr,
    R_CAST: tl.constexpr,
    TILE_R: tl.constexpr,
    TILE_C: tl.constexpr,
):
    """Tile number ``index`` of one operand (batch items, then rows, then columns): blocks along columns and/or rows.

    Tiles start at multiples of BLOCK in both directions, so every block lies
    inside one tile; the ragged end of a dimension loads as zeros, which leave
    a block's maximum unchanged.
    """
    col_tiles = tl.cdiv(n_cols, TILE_C)
    per_item = tl.cdiv(n_rows, TILE_R) * col_tiles
    batch = (index // per_item).to(tl.int64)
    within = index % per_item
    rows = (within // col_tiles) * TILE_R + tl.arange(0, TILE_R)
    cols = (within % col_tiles) * TILE_C + tl.arange(0, TILE_C)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    source = x_ptr + batch * stride_batch + rows.to(tl.int64)[:, None] * stride_row + cols[None, :] * stride_col
    tile = _load_float32(source, mask, IN_BF16, NATIVE)
    target = batch * n_rows * n_cols + rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    if LAST:
        groups = tl.reshape(tile, [TILE_R, TILE_C // BLOCK, BLOCK])
        out = _mx_blocks(groups, 2, l_mantissa, l_min_exp, l_max_exp, l_max, CEIL, L_CAST)
        _store_from_float32(last_ptr + target, tl.reshape(out, [TILE_R, TILE_C]), mask, OUT_BF16, NATIVE)
    if ROWS:
        groups = tl.reshape(tile, [TILE_R // BLOCK, BLOCK, TILE_C])
        out = _mx_blocks(groups, 1, r_mantissa, r_min_exp, r_max_exp, r_max, CEIL, R_CAST)
        _store_from_float32(rows_ptr + target, tl.reshape(out, [TILE_R, TILE_C]), mask, OUT_BF16, NATIVE)


FORMAT_ARGS = [f"{job}_{axis}_{field}" for job in "ab" for axis in "lr" for field in ("mantissa", "min_exp", "max_exp")]


@triton.jit(do_not_specialize=FORMAT_ARGS)
def _mx_pairs_kernel(
    a_ptr,
    a_last_ptr,
    a_rows_ptr,
    b_ptr,
    b_last_ptr,
    b_rows_ptr,
    a_n_rows,
    a_n_cols,
    a_stride_batch,
    a_stride_row,
    a_stride_col,
    a_tiles,
    b_n_rows,
    b_n_cols,
    b_stride_batch,
    b_stride_row,
    b_stride_col,
    a_l_mantissa,
    a_l_min_exp,
    a_l_max_exp,
    a_l_max,
    a_r_mantissa,
    a_r_min_exp,
    a_r_max_exp,
    a_r_max,
    b_l_mantissa,
    b_l_min_exp,
    b_l_max_exp,
    b_l_max,
    b_r_mantissa,
    b_r_min_exp,
    b_r_max_exp,
    b_r_max,
    A_IN_BF16: tl.constexpr,
    A_LAST: tl.constexpr,
    A_ROWS: tl.constexpr,
    A_L_CAST: tl.constexpr,
    A_R_CAST: tl.constexpr,
    TWO: tl.constexpr,
    B_IN_BF16: tl.constexpr,
    B_LAST: tl.constexpr,
    B_ROWS: tl.constexpr,
    B_L_CAST: tl.constexpr,
    B_R_CAST: tl.constexpr,
    OUT_BF16: tl.constexpr,
    NATIVE: tl.constexpr,
    BLOCK: tl.constexpr,
    CEIL: tl.constexpr,
    TILE_R: tl.constexpr,
    TILE_C: tl.constexpr,
):
    """The first ``a_tiles`` programs quantize operand a, the rest (when TWO) operand b.

    One launch for a GEMM's two operands: half the launches, and the smaller
    operand's tiles fill the SMs the larger one leaves idle in its last wave.
    """
    index = tl.program_id(0)
    if index < a_tiles:
        _pair_tile(
            index, a_ptr, a_last_ptr, a_rows_ptr, a_n_rows, a_n_cols, a_stride_batch, a_stride_row, a_stride_col,
            a_l_mantissa, a_l_min_exp, a_l_max_exp, a_l_max, a_r_mantissa, a_r_min_exp, a_r_max_exp, a_r_max,
            A_IN_BF16, OUT_BF16, NATIVE, BLOCK, CEIL, A_LAST, A_ROWS, A_L_CAST, A_R_CAST, TILE_R, TILE_C,
        )
    elif TWO:
        _pair_tile(
            index - a_tiles, b_ptr, b_last_ptr, b_rows_ptr, b_n_rows, b_n_cols, b_stride_batch, b_stride_row,
            b_stride_col, b_l_mantissa, b_l_min_exp, b_l_max_exp, b_l_max, b_r_mantissa, b_r_min_exp, b_r_max_exp,
            b_r_max, B_IN_BF16, OUT_BF16, NATIVE, BLOCK, CEIL, B_LAST, B_ROWS, B_L_CAST, B_R_CAST, TILE_R, TILE_C,
        )


@triton.jit(do_not_specialize=["mantissa_bits", "min_exponent"])
def _scaled_cast_kernel(
    x_ptr,
    out_ptr,
    scale_ptr,
    n,
    mantissa_bits,
    min_exponent,
    max_normal,
    IN_BF16: tl.constexpr,
    OUT_BF16: tl.constexpr,
    TILE: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
    mask = offsets < n
    values = _load_float32(x_ptr + offsets, mask, IN_BF16, False)
    scaled = values * tl.load(scale_ptr)
    element = _round_to_element(tl.abs(scaled), mantissa_bits, min_exponent, max_normal)
    out = tl.where(scaled != scaled, scaled, _with_sign_of(element, scaled))
    _store_from_float32(out_ptr + offsets, out, mask, OUT_BF16, False)


def _format_args(fmt: ElementFormat | None) -> tuple[int, int, int, float]:
    """The kernel's runtime description of a format (placeholders when that output is skipped)."""
    if fmt is None:
        return (0, 0, 0, 1.0)
    return (fmt.mantissa_bits, fmt.min_exponent, fmt.max_exponent, fmt.max_normal)


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int, int]:
    """``x`` with its leading dimensions merged: (tensor, batch, batch stride, rows, columns)."""
    if x.dim() == 2:
        return x, 1, 0, x.shape[0], x.shape[1]
    merged = x.reshape(-1, *x.shape[-2:])
    return merged, merged.shape[0], merged.stride(0), merged.shape[1], merged.shape[2]


_FP8_CASTS = {"e4m3": 1, "e5m2": 2}
"""The ``CAST`` code of each format the GPU can round with its FP8 cast; the others use 0 (generic arithmetic)."""


@functools.cache
def _has_fp8_cast(device: torch.device) -> bool:
    """Whether ``device`` is a GPU with the saturating FP8 conversion instructions (compute capability ≥ 8.9)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def _cast_code(fmt: ElementFormat | None, native: bool) -> int:
    return _FP8_CASTS.get(fmt.name, 0) if native and fmt is not None else 0


def _raw(x: torch.Tensor) -> torch.Tensor:
    """What the kernel reads or writes: bfloat16 as its int16 bits (see ``_load_float32``)."""
    return x.view(torch.int16) if x.dtype == torch.bfloat16 else x


def _int_traits(value: int) -> tuple[bool, bool, bool]:
    """What Triton specializes an integer argument on: equal to 1, divisible by 16, beyond int32."""
    return value == 1, value % 16 == 0, value >= 2**31


class _DirectLauncher:
    """Launches a kernel's compiled binaries without Triton's per-call argument binding.

    Triton's ``kernel[grid](...)`` re-derives the specialization of every
    argument on each call, which costs more CPU time than a small kernel takes
    on the GPU. The first launch of each specialization goes through it (and
    compiles); later launches with the same traits — the dtypes, constexprs,
    16-byte pointer alignment and integer traits Triton specializes on — call
    the compiled kernel with the same arguments directly. If the compiled
    kernel rejects the call (a Triton version with another launch
    convention), the launcher uses the regular path from then on.
    """

    def __init__(self, kernel: triton.runtime.JITFunction) -> None:
        self.kernel = kernel
        self.compiled: dict[tuple[object, ...], object] = {}
        self.enabled = True

    def __call__(
        self,
        grid: tuple[int, int, int],
        pointers: tuple[torch.Tensor, ...],
        integers: tuple[int, ...],
        others: tuple[object, ...],
        constexprs: tuple[object, ...],
        num_warps: int,
    ) -> None:
        key = (
            pointers[0].device,
            tuple((p.dtype, p.data_ptr() % 16 == 0) for p in pointers),
            tuple(_int_traits(i) for i in integers),
            constexprs,
            num_warps,
        )
        compiled = self.compiled.get(key) if self.enabled else None
        if compiled is not None:
            try:
                compiled[grid](*pointers, *integers, *others, *constexprs)  # type: ignore[index]
                return
            except Exception:  # another Triton launch convention: use Triton's own path from now on
                self.enabled = False
        compiled = self.kernel[grid](*pointers, *integers, *others, *constexprs, num_warps=num_warps)
        if self.enabled and compiled is not None:
            self.compiled[key] = compiled


_pairs_launcher = _DirectLauncher(_mx_pairs_kernel)


PairJob = tuple[torch.Tensor, ElementFormat | None, ElementFormat | None]
"""A tensor (≥ 2-D, any strides) and its formats along its last dimension and along its rows (``None``: skip)."""


class _Prepared(NamedTuple):
    """One job as the kernel takes it, and the outputs it will write."""

    pointers: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    integers: tuple[int, ...]
    formats: tuple[float, ...]
    constexprs: tuple[bool, bool, bool, int, int]
    tiles: int
    outputs: tuple[torch.Tensor | None, torch.Tensor | None]


def _prepare(job: PairJob, out_dtype: torch.dtype, native: bool, tile: tuple[int, int]) -> _Prepared:
    x, last, rows = job
    source, batch, stride_batch, n_rows, n_cols = _batched(x)
    out_last = torch.empty(x.shape, dtype=out_dtype, device=x.device) if last is not None else None
    out_rows = torch.empty(x.shape, dtype=out_dtype, device=x.device) if rows is not None else None
    view = (lambda t: t) if native else _raw
    written = out_last if out_last is not None else out_rows
    assert written is not None
    return _Prepared(
        pointers=(view(source), view(written), view(out_rows if out_rows is not None else written)),
        integers=(n_rows, n_cols, stride_batch, source.stride(-2), source.stride(-1)),
        formats=(*_format_args(last), *_format_args(rows)),
        constexprs=(x.dtype == torch.bfloat16, last is not None, rows is not None, _cast_code(last, native), _cast_code(rows, native)),
        tiles=batch * triton.cdiv(n_rows, tile[0]) * triton.cdiv(n_cols, tile[1]),
        outputs=(out_last, out_rows),
    )


def mx_pairs(
    jobs: Sequence[PairJob],
    block_size: int,
    ceil: bool,
    out_dtype: torch.dtype,
    tile: tuple[int, int] = PAIR_TILE,
    num_warps: int = PAIR_WARPS,
    hardware_cast: bool = True,
) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Each job's outputs, quantize-dequantized in blocks along its last dimension and along dim -2.

    Jobs share a launch two at a time (a GEMM's two operands: one launch
    instead of two). Outputs are contiguous in ``out_dtype``. ``tile`` (rows,
    columns) and ``num_warps`` tune the launch; tiles grow to at least one
    block. ``hardware_cast=False`` keeps the portable arithmetic on GPUs that
    have FP8 casts (the results are the same; benchmarks compare the speed).
    """
    native = hardware_cast and _has_fp8_cast(jobs[0][0].device)
    tile = (max(tile[0], block_size), max(tile[1], block_size))
    results = []
    for start in range(0, len(jobs), 2):
        chunk = jobs[start : start + 2]
        wanted = [last is not None or rows is not None for _, last, rows in chunk]
        prepared = [_prepare(job, out_dtype, native, tile) for job, want in zip(chunk, wanted) if want]
        if prepared:
            a, b = prepared[0], prepared[-1]
            _pairs_launcher(
                (a.tiles + (b.tiles if len(prepared) == 2 else 0), 1, 1),
                (*a.pointers, *b.pointers),
                (*a.integers, a.tiles, *b.integers),
                (*a.formats, *b.formats),
                (*a.constexprs, len(prepared) == 2, *b.constexprs, out_dtype == torch.bfloat16, native, block_size, ceil, *tile),
                num_warps,
            )
        outputs = iter(p.outputs for p in prepared)
        results += [next(outputs) if want else (None, None) for want in wanted]
    return results


def mx_pair(
    x: torch.Tensor,
    last: ElementFormat | None,
    rows: ElementFormat | None,
    block_size: int,
    ceil: bool,
    out_dtype: torch.dtype,
    tile: tuple[int, int] = PAIR_TILE,
    num_warps: int = PAIR_WARPS,
    hardware_cast: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`mx_pairs` for one tensor."""
    return mx_pairs([(x, last, rows)], block_size, ceil, out_dtype, tile, num_warps, hardware_cast)[0]


def scaled_cast(x: torch.Tensor, fmt: ElementFormat, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Per-tensor FP8 element values of ``x * scale`` (``scale`` a one-element float32 tensor on x's device)."""
    source = x.contiguous()
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    n = source.numel()
    _scaled_cast_kernel[(triton.cdiv(n, CAST_TILE),)](
        _raw(source),
        _raw(out),
        scale.to(torch.float32).reshape(1),
        n,
        fmt.mantissa_bits,
        fmt.min_exponent,
        fmt.max_normal,
        IN_BF16=x.dtype == torch.bfloat16,
        OUT_BF16=out_dtype == torch.bfloat16,
        TILE=CAST_TILE,
    )
    return out
