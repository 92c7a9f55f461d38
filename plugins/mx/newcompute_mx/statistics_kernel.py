"""One Triton launch per statistics observation: MX blocks (exponents, histogram) and per-tensor FP8 casts.

A measured training step observes six roles in each of a few hundred
layers. Counted with PyTorch, each observation is some forty small kernels
(absolute value, padding, block maxima, exponents in float64, comparisons,
sums, a histogram), each of which replays in microseconds and costs more to
launch than to run; thousands of them added about 230 ms to a measured
124 ms clm-400m MX step on an H200 (CUDA graphs replayed). This kernel
reads the observed view in place (any strides, so a ``statistics_rows``
sample is not copied), finds every block's shared exponent with the
quantizer's own rule (:func:`~newcompute_mx.kernels._shared_exponent`), and
adds its counts straight into the :class:`~newcompute.StatisticSums`
buffers with atomics: no host sync, no scratch memory, so a CUDA-graph
capture replays it like any other kernel.

Each program walks a share of the tiles (a grid of a few programs per SM)
and sums its counts and its 256-bin exponent histogram locally (whose
lowest and highest non-empty bins are its exponent bounds), so the atomics
into the shared buffers are one per program and non-empty bin, not one
per block: a histogram of a few hot bins updated per block serialises on
them. A per-tensor FP8 observation (some fifteen PyTorch kernels) is the
same walk with one scale and no blocks, plus the whole tensor's amax.
"""

from __future__ import annotations

import functools

import torch
from newcompute import missing_dependency

try:
    import triton
    import triton.language as tl
except ImportError as exc:
    raise missing_dependency("triton", "newcompute-mx", "the MX statistics kernel (used for CUDA tensors)") from exc

from newcompute_mx.formats import SCALE_MAX_EXPONENT, SCALE_MIN_EXPONENT, ElementFormat
from newcompute_mx.kernels import (
    PAIR_TILE,
    PAIR_WARPS,
    _batched,
    _block_maxima,
    _DirectLauncher,
    _load_float32,
    _pow2,
    _raw,
    _shared_exponent,
)
from newcompute_mx.statistics import NO_EXPONENT

NO_EXPONENT_BOUND: tl.constexpr = tl.constexpr(NO_EXPONENT)
HISTOGRAM_BINS = SCALE_MAX_EXPONENT - SCALE_MIN_EXPONENT + 1
"""Bins of a role's exponent histogram: one per E8M0 exponent, the lowest first."""
PROGRAMS_PER_SM = 3
"""Programs per SM sharing the tiles: as many as are resident at once (the MX kernel takes about 165 registers
a thread on sm_90, so three programs of 4 warps fit an SM), so the walk ends in one wave and the atomics stay few."""


@triton.jit
def _block_statistics(groups, AXIS: tl.constexpr, max_exponent, max_normal, underflow_limit, CEIL: tl.constexpr):
    """Saturated and underflowing elements of a tile's blocks (slices along ``AXIS``), and their exponents' histogram.

    Bin ``e + 127`` (the E8M0 code) counts the blocks with exponent ``e``
    that hold a non-zero finite value; the others land in bin 255 (the NaN
    code, no exponent), which is never added to the sums.

    A block holding a NaN or inf gets no exponent and scales nothing (its
    elements count as scaled to zero, as the PyTorch path counts them).
    """
    top = _block_maxima(groups, AXIS)
    usable = top < 0x7F800000
    amax = tl.where(usable, top, 0).to(tl.float32, bitcast=True)
    shared = _shared_exponent(amax, max_exponent, max_normal, CEIL)
    magnitude = tl.abs(groups)
    scaled = (magnitude * tl.where(shared == 127, 0.5, 1.0)) * _pow2(-tl.minimum(shared, 126))
    scaled = tl.where(usable, scaled, 0.0)
    saturated = tl.sum((scaled > max_normal).to(tl.int32))
    underflow = tl.sum(((magnitude > 0) & (scaled <= underflow_limit)).to(tl.int32))
    holding = usable & (top > 0)
    histogram = tl.histogram(tl.ravel(tl.where(holding, shared + 127, 255)), 256)
    return saturated, underflow, histogram


@triton.jit
def _load_tile(
    x_ptr, index, n_rows, n_cols, stride_batch, stride_row, stride_col, IN_BF16: tl.constexpr,
    TILE_R: tl.constexpr, TILE_C: tl.constexpr,
):
    """Tile ``index`` (batch items, then rows, then columns) of a strided view, as float32; zeros past its ends."""
    col_tiles = tl.cdiv(n_cols, TILE_C)
    per_item = tl.cdiv(n_rows, TILE_R) * col_tiles
    batch = (index // per_item).to(tl.int64)
    within = index % per_item
    rows = (within // col_tiles) * TILE_R + tl.arange(0, TILE_R)
    cols = (within % col_tiles) * TILE_C + tl.arange(0, TILE_C)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    offsets = rows.to(tl.int64)[:, None] * stride_row + cols.to(tl.int64)[None, :] * stride_col
    return _load_float32(x_ptr + batch * stride_batch + offsets, mask, IN_BF16, False)


@triton.jit(do_not_specialize=["max_exponent"])
def _mx_statistics_kernel(
    x_ptr,
    counted_ptr,
    lowest_ptr,
    highest_ptr,
    histogram_ptr,
    n_rows,
    n_cols,
    stride_batch,
    stride_row,
    stride_col,
    n_tiles,
    seen,
    max_exponent,
    max_normal,
    underflow_limit,
    IN_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
    CEIL: tl.constexpr,
    LAST: tl.constexpr,
    TILE_R: tl.constexpr,
    TILE_C: tl.constexpr,
):
    """Programs take tiles (batch items, then rows, then columns) in turn; each adds its sums once at the end.

    ``counted_ptr`` points at three float64 slots: saturated, underflow and
    seen (added by program 0); ``lowest_ptr`` and ``highest_ptr`` at the
    running exponent bounds, which take ±NO_EXPONENT from a program whose
    blocks hold no value (as the PyTorch path records an observation
    without any). Tiles start at multiples of BLOCK along the
    block axis, so every block lies inside one tile; the ragged end of a
    dimension loads as zeros, like the quantizer's padding.
    """
    program = tl.program_id(0)
    saturated = tl.zeros([1], tl.int64)
    underflow = tl.zeros([1], tl.int64)
    histogram = tl.zeros([256], tl.int32)
    for index in range(program, n_tiles, tl.num_programs(0)):
        tile = _load_tile(x_ptr, index, n_rows, n_cols, stride_batch, stride_row, stride_col, IN_BF16, TILE_R, TILE_C)
        if LAST:
            groups = tl.reshape(tile, [TILE_R, TILE_C // BLOCK, BLOCK])
            tile_saturated, tile_underflow, tile_histogram = _block_statistics(
                groups, 2, max_exponent, max_normal, underflow_limit, CEIL
            )
        else:
            groups = tl.reshape(tile, [TILE_R // BLOCK, BLOCK, TILE_C])
            tile_saturated, tile_underflow, tile_histogram = _block_statistics(
                groups, 1, max_exponent, max_normal, underflow_limit, CEIL
            )
        saturated += tile_saturated.to(tl.int64)
        underflow += tile_underflow.to(tl.int64)
        histogram += tile_histogram
    bins = tl.arange(0, 256)
    held = (bins < 255) & (histogram > 0)
    tl.atomic_add(histogram_ptr + bins, histogram.to(tl.float64), mask=held)
    lowest = tl.min(tl.where(held, bins - 127, NO_EXPONENT_BOUND))
    highest = tl.max(tl.where(held, bins - 127, -NO_EXPONENT_BOUND))
    tl.atomic_min(lowest_ptr, lowest.to(tl.float64))
    tl.atomic_max(highest_ptr, highest.to(tl.float64))
    _add_counts(counted_ptr, saturated, underflow, seen, program)


@triton.jit
def _add_counts(counted_ptr, saturated, underflow, seen, program):
    """One atomic for a program's saturated and underflow counts and, from program 0, the elements seen."""
    slot = tl.arange(0, 4)
    first = (program == 0).to(tl.int64)
    counts = tl.where(slot == 0, saturated, tl.where(slot == 1, underflow, tl.where(slot == 2, seen * first, 0)))
    tl.atomic_add(counted_ptr + slot, counts.to(tl.float64), mask=(slot < 3) & (counts > 0))


@triton.jit
def _largest_bits(tile):
    """``max|x|`` of a tile as float32 bits; NaN's bits beat every other value's, so a NaN is the maximum."""
    return tl.max(tl.ravel(tile.to(tl.int32, bitcast=True) & 0x7FFFFFFF))


@triton.jit
def _scaled_statistics_kernel(
    seen_ptr,
    whole_ptr,
    scale_ptr,
    counted_ptr,
    amax_ptr,
    n_rows,
    n_cols,
    stride_batch,
    stride_row,
    stride_col,
    n_tiles,
    whole_rows,
    whole_cols,
    whole_stride_batch,
    whole_stride_row,
    whole_stride_col,
    whole_tiles,
    seen,
    max_normal,
    underflow_limit,
    IN_BF16: tl.constexpr,
    SAME: tl.constexpr,
    TILE_R: tl.constexpr,
    TILE_C: tl.constexpr,
):
    """Saturated and underflowing elements of ``seen`` cast with one scale, and ``max|x|`` of the whole tensor.

    ``counted_ptr``: as in ``_mx_statistics_kernel``; ``amax_ptr``: the
    kind's running amax (float64), which a NaN makes NaN. With ``SAME`` the
    whole tensor is the seen one and one pass finds both; otherwise a second
    pass reads the whole tensor for its amax only.
    """
    program = tl.program_id(0)
    scale = tl.load(scale_ptr)
    saturated = tl.zeros([1], tl.int64)
    underflow = tl.zeros([1], tl.int64)
    largest = tl.zeros([1], tl.int32)
    for index in range(program, n_tiles, tl.num_programs(0)):
        tile = _load_tile(
            seen_ptr, index, n_rows, n_cols, stride_batch, stride_row, stride_col, IN_BF16, TILE_R, TILE_C
        )
        magnitude = tl.abs(tile)
        scaled = magnitude * scale
        saturated += tl.sum((scaled > max_normal).to(tl.int32)).to(tl.int64)
        underflow += tl.sum(((magnitude > 0) & (scaled <= underflow_limit)).to(tl.int32)).to(tl.int64)
        if SAME:
            largest = tl.maximum(largest, _largest_bits(tile))
    if not SAME:
        for index in range(program, whole_tiles, tl.num_programs(0)):
            tile = _load_tile(
                whole_ptr, index, whole_rows, whole_cols, whole_stride_batch, whole_stride_row, whole_stride_col,
                IN_BF16, TILE_R, TILE_C,
            )
            largest = tl.maximum(largest, _largest_bits(tile))
    amax = largest.to(tl.float32, bitcast=True).to(tl.float64)
    tl.atomic_max(amax_ptr + tl.arange(0, 1), amax)
    _add_counts(counted_ptr, saturated, underflow, seen, program)


_launcher = _DirectLauncher(_mx_statistics_kernel)
_scaled_launcher = _DirectLauncher(_scaled_statistics_kernel)


@functools.cache
def _program_limit(device: torch.device) -> int:
    """How many programs share the tiles: a few per SM on a GPU; a handful in the CPU interpreter."""
    if device.type != "cuda":
        return 3
    return PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


def _block_tile(block_size: int, last: bool) -> tuple[int, int]:
    """Tiles of PAIR_TILE's 4096 elements (what 4 warps hold in registers), at least one block along the block axis.

    Tiles stretched to a 128-row block would spill registers; a narrower one does not.
    """
    if last:
        return PAIR_TILE[0], max(PAIR_TILE[1], block_size)
    rows = max(PAIR_TILE[0], block_size)
    return rows, PAIR_TILE[0] * PAIR_TILE[1] // rows


def observe_mx_blocks(
    counted: torch.Tensor,
    lowest: torch.Tensor,
    highest: torch.Tensor,
    histogram: torch.Tensor,
    tensor: torch.Tensor,
    axis: int,
    fmt: ElementFormat,
    block_size: int,
    ceil: bool,
) -> None:
    """Add ``tensor``'s MX statistics along ``axis`` (one of its last two) into the sums' float64 slots.

    ``counted``: three consecutive slots (saturated, underflow, seen
    elements); ``lowest``/``highest``: one slot each, the running minimum
    and maximum exponent; ``histogram``: :data:`HISTOGRAM_BINS` bins. One
    launch, asynchronous.
    """
    if axis not in (-1, -2) or tensor.dim() < 2:
        raise ValueError(
            f"observe_mx_blocks needs a tensor of at least 2 dimensions and block axis -1 or -2, got "
            f"{tensor.dim()} dimensions and axis {axis}"
        )
    if (counted.numel(), lowest.numel(), highest.numel(), histogram.numel()) != (3, 1, 1, HISTOGRAM_BINS):
        raise ValueError(f"observe_mx_blocks needs 3 counted slots, one slot per bound and {HISTOGRAM_BINS} bins")
    if tensor.numel() == 0:
        return
    source, batch, stride_batch, n_rows, n_cols = _batched(tensor.detach())
    tile = _block_tile(block_size, axis == -1)
    n_tiles = batch * triton.cdiv(n_rows, tile[0]) * triton.cdiv(n_cols, tile[1])
    _launcher(
        (min(n_tiles, _program_limit(tensor.device)), 1, 1),
        (_raw(source), counted, lowest, highest, histogram),
        (n_rows, n_cols, stride_batch, source.stride(-2), source.stride(-1), n_tiles, tensor.numel()),
        (fmt.max_exponent, fmt.max_normal, fmt.min_subnormal / 2),
        (tensor.dtype == torch.bfloat16, block_size, ceil, axis == -1, *tile),
        PAIR_WARPS,
    )


def _geometry(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int, int, int]]:
    """A view as the per-tensor kernel reads it: (raw tensor, (rows, columns, strides, tiles of CAST_TILE))."""
    source, batch, stride_batch, n_rows, n_cols = _batched(x.detach() if x.dim() >= 2 else x.detach().reshape(1, -1))
    tiles = batch * triton.cdiv(n_rows, PAIR_TILE[0]) * triton.cdiv(n_cols, PAIR_TILE[1])
    return _raw(source), (n_rows, n_cols, stride_batch, source.stride(-2), source.stride(-1), tiles)


def observe_scaled_cast(
    counted: torch.Tensor,
    amax: torch.Tensor,
    tensor: torch.Tensor,
    seen: torch.Tensor,
    fmt: ElementFormat,
    scale: torch.Tensor,
) -> None:
    """Add the per-tensor cast statistics of ``seen`` (``tensor`` or a view of it) into the sums' float64 slots.

    ``counted``: three consecutive slots (saturated, underflow, seen
    elements) of ``seen`` cast with the one-element float32 ``scale``;
    ``amax``: one slot, the running ``max|tensor|``. One launch, asynchronous.
    """
    if counted.numel() != 3 or amax.numel() != 1 or scale.numel() != 1:
        raise ValueError("observe_scaled_cast needs 3 counted slots, one amax slot and a one-element scale")
    if tensor.numel() == 0:
        return
    same = seen is tensor
    seen_source, seen_geometry = _geometry(seen)
    whole_source, whole_geometry = (seen_source, seen_geometry) if same else _geometry(tensor)
    _scaled_launcher(
        (max(1, min(max(seen_geometry[-1], whole_geometry[-1]), _program_limit(tensor.device))), 1, 1),
        (seen_source, whole_source, scale.float().reshape(1), counted, amax),
        (*seen_geometry, *whole_geometry, seen.numel()),
        (fmt.max_normal, fmt.min_subnormal / 2),
        (tensor.dtype == torch.bfloat16, same, *PAIR_TILE),
        PAIR_WARPS,
    )
