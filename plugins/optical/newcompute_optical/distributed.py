"""Keeping data-parallel ranks on the same ranges without leaving the device.

Batch statistics are stored as ``(−min, max)`` so that one all-reduce with
MAX gives every rank the global min and max at once; the result feeds the
same smoothing on every rank, so the running ranges stay identical. A
quantile range is combined the same way (the widest of the ranks'
quantiles), a documented approximation of the global quantile.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def data_parallel() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if data_parallel() else 0


def agree(stats: torch.Tensor) -> None:
    """All-reduce ``(−min, max)`` statistics in place with MAX (a no-op without data parallelism)."""
    if data_parallel():
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)


def encode(value_range: torch.Tensor) -> torch.Tensor:
    """``(lo, hi)`` → ``(−lo, hi)``, the form in which statistics are merged (and back)."""
    return torch.stack((-value_range[0], value_range[1]))


def agreed_range(value_range: torch.Tensor) -> torch.Tensor:
    """A batch range widened to cover every rank's batch."""
    merged = encode(value_range)
    agree(merged)
    return encode(merged)
