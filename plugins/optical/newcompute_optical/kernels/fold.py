"""Closing a product's call on the device: fold the batch statistics into the running ranges.

One single-program launch per call updates the three running ranges with
the smoothing rule, clears the statistics for the next call and advances
the noise counter, so a training step never reads a range on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fold_one(range_ptr, stats_ptr, take):
    lo = tl.load(range_ptr)
    hi = tl.load(range_ptr + 1)
    batch_lo = -tl.load(stats_ptr)
    batch_hi = tl.load(stats_ptr + 1)
    was_set = lo <= hi
    tl.store(range_ptr, tl.where(was_set, lo + take * (batch_lo - lo), batch_lo))
    tl.store(range_ptr + 1, tl.where(was_set, hi + take * (batch_hi - hi), batch_hi))
    tl.store(stats_ptr, float("-inf"))
    tl.store(stats_ptr + 1, float("-inf"))


@triton.jit
def fold_kernel(
    input_range_ptr, weight_range_ptr, output_range_ptr, stats_ptr, calls_ptr, take, TRAINING: tl.constexpr
):
    if TRAINING:
        _fold_one(input_range_ptr, stats_ptr, take)
        _fold_one(weight_range_ptr, stats_ptr + 2, take)
        _fold_one(output_range_ptr, stats_ptr + 4, take)
    tl.store(calls_ptr, tl.load(calls_ptr) + 1)


def close_call(
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    stats: torch.Tensor,
    calls: torch.Tensor,
    take: float,
    training: bool,
) -> None:
    """Fold ``stats`` (3 × 2, rows ``(−min, max)``) into ``ranges`` when training; count the call."""
    fold_kernel[(1,)](*ranges, stats, calls, take, TRAINING=training, num_warps=1, enable_fp_fusion=False)
