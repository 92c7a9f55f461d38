"""Where the loop's training samples come from: the packed corpus in a seeded order, or the stream.

The loop asks for samples by their index in the run (sample ``n`` is the
``n``-th sequence the run trains on, whichever process trains on it) and
saves what :meth:`TrainBlocks.state` returns in every checkpoint, so that
both kinds of data resume where they stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from newcompute.errors import ConfigError
from newcompute.train.packing import BlockOrder


class TrainBlocks(Protocol):
    def take(self, first: int, count: int) -> np.ndarray:
        """Samples ``first … first+count-1`` as a ``(count, block_size)`` array."""
        ...

    def state(self, sample: int) -> dict[str, Any]:
        """The data position once ``sample`` samples are consumed, as JSON for the checkpoint."""
        ...

    def restore(self, saved: dict[str, Any] | None, sample: int) -> None:
        """Continue from a checkpoint's ``state(sample)`` (None: a checkpoint written before positions were)."""
        ...


@dataclass
class PackedBlocks:
    """Blocks held (or memory-mapped) whole: sample ``n`` depends only on the seed and ``n``, so the position
    is the sample count alone. ``rows`` picks the train blocks out of ``train`` (all of them without it), so
    that a memory-mapped corpus is read a batch at a time rather than copied."""

    train: np.ndarray
    order: BlockOrder
    rows: np.ndarray | None = None

    def take(self, first: int, count: int) -> np.ndarray:
        indices = self.order.indices(first, count)
        return self.train[indices if self.rows is None else self.rows[indices]]

    def state(self, sample: int) -> dict[str, Any]:
        return {"kind": "packed", "sample": sample}

    def restore(self, saved: dict[str, Any] | None, sample: int) -> None:
        if saved is not None and saved.get("kind") != "packed":
            raise ConfigError(
                "--resume: the checkpoint was written by a --streaming run, whose data position is in the stream: "
                "resume it with --streaming."
            )
