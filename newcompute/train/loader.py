"""The micro-batches of one process, fetched ahead by a torch DataLoader so a GPU step never waits on data.

Micro-batch ``k`` of a run is micro-step ``k % accumulation`` of optimizer
step ``k // accumulation``; this process takes its samples of the step's
global batch (interleaved slices, as :mod:`newcompute.train.loop`
describes), so the batches are the same whatever the number of workers.
Packed data is random access: a map-style dataset read in index order by
``data_workers`` worker processes. A stream is read forward, so it gets one
worker at most, which also hands over the stream position after each step's
last micro-batch, for the checkpoint. On CUDA the batches come in pinned
memory and are copied to the GPU without blocking (not under CUDA graphs:
see :func:`pins_batches`). The time the loop spends
waiting for a batch is counted, so a run can show that data is not its
bottleneck.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from newcompute.train.blocks import PackedBlocks, TrainBlocks
from newcompute.train.streaming import StreamedBlocks

PREFETCH_BATCHES = 4
"""Micro-batches each worker keeps ready ahead of the loop."""
GPU_WORKERS = 2
"""Worker processes on a GPU when ``--data-workers`` is not given: enough to keep slicing and pinning ahead of
a step; on a CPU the default is 0, since a worker would take cores from the step itself."""


@dataclass(frozen=True)
class Slicing:
    """Which samples micro-batch ``k`` of this process is: the loop's rule, in one place."""

    batch_size: int
    micro_batch_size: int
    accumulation: int
    processes: int
    process_index: int

    def first(self, index: int) -> int:
        step, micro = divmod(index, self.accumulation)
        return step * self.batch_size + (micro * self.processes + self.process_index) * self.micro_batch_size


def _as_tensor(blocks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(blocks, dtype=np.int64))


class _PackedMicroBatches(Dataset):
    def __init__(self, blocks: PackedBlocks, slicing: Slicing) -> None:
        self.blocks, self.slicing = blocks, slicing

    def __getitem__(self, index: int) -> tuple[torch.Tensor, None]:
        return _as_tensor(self.blocks.take(self.slicing.first(index), self.slicing.micro_batch_size)), None


class _StreamMicroBatches(IterableDataset):
    """Micro-batches ``start … end-1`` of the stream, the last of each step carrying the position after it."""

    def __init__(self, blocks: StreamedBlocks, slicing: Slicing, start: int, end: int) -> None:
        self.blocks, self.slicing, self.start, self.end = blocks, slicing, start, end

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, Any] | None]]:
        slicing = self.slicing
        for index in range(self.start, self.end):
            batch = self.blocks.take(slicing.first(index), slicing.micro_batch_size)
            step, micro = divmod(index, slicing.accumulation)
            last = micro == slicing.accumulation - 1
            yield _as_tensor(batch), self.blocks.state((step + 1) * slicing.batch_size) if last else None


def _ignore_ctrl_c(worker: int) -> None:
    """Ctrl-C in a terminal reaches the workers too (one process group): the main process stops the run after
    the step, saves and probes the next batch, which the workers must still be alive to hand over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def pins_batches(device: torch.device, cuda_graphs: bool) -> bool:
    """Whether batches come in pinned memory: on CUDA, unless micro-steps are captured as CUDA graphs.

    The DataLoader pins in a thread of its own, and a CUDA call from another thread while the main thread
    captures a graph (pinned memory is allocated with one) fails the capture. Under graphs a batch is
    copied from pageable memory instead: a few hundred KB a micro-step.
    """
    return device.type == "cuda" and not cuda_graphs


def default_workers(requested: int | None, device: torch.device) -> int:
    if requested is not None:
        return requested
    return GPU_WORKERS if device.type == "cuda" else 0


class BatchFeed:
    """This process's micro-batches from a step on, on the device, and the data position after each step."""

    def __init__(
        self, blocks: TrainBlocks, slicing: Slicing, steps: int, device: torch.device, workers: int, pin: bool
    ) -> None:
        self.blocks, self.slicing, self.steps, self.device = blocks, slicing, steps, device
        self.workers, self.pin = workers, pin
        self.waited = 0.0
        self._batches: Iterator[tuple[torch.Tensor, dict[str, Any] | None]] | None = None
        self._position: tuple[int, dict[str, Any]] | None = None
        self._next_index = 0

    def start(self, step: int) -> None:
        """Fetch from optimizer step ``step`` (0-based) on, through the step after the last (a stopped run probes
        the loss on it)."""
        self.close()
        start, end = step * self.slicing.accumulation, (self.steps + 1) * self.slicing.accumulation
        self._next_index = start
        self._batches = iter(self._loader(start, end))

    def _loader(self, start: int, end: int) -> DataLoader:
        fork = "fork" in multiprocessing.get_all_start_methods()
        if isinstance(self.blocks, StreamedBlocks):
            workers = min(self.workers, 1) if fork else 0
            dataset: Dataset = _StreamMicroBatches(self.blocks, self.slicing, start, end)
            sampler = None
        else:
            workers = self.workers if fork else 0
            dataset = _PackedMicroBatches(self.blocks, self.slicing)  # type: ignore[arg-type]
            sampler = range(start, end)
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin,
            prefetch_factor=PREFETCH_BATCHES if workers else None,
            multiprocessing_context="fork" if workers else None,
            generator=torch.Generator().manual_seed(0),  # its own: drawing worker seeds must not move torch's
            worker_init_fn=_ignore_ctrl_c if workers else None,
        )

    def next(self) -> torch.Tensor:
        if self._batches is None:
            self.start(0)
        assert self._batches is not None
        started = time.perf_counter()
        batch, position = next(self._batches)
        self.waited += time.perf_counter() - started
        index = self._next_index
        self._next_index += 1
        if position is not None:
            self._position = (index // self.slicing.accumulation + 1, position)
        return batch.to(self.device, non_blocking=True)

    def state(self, step: int) -> dict[str, Any]:
        """The data position after ``step`` optimizer steps, for the checkpoint."""
        if isinstance(self.blocks, StreamedBlocks):
            if self._position is None or self._position[0] != step:
                raise RuntimeError(f"the stream position after step {step} was not handed over by the loader")
            return self._position[1]
        return self.blocks.state(step * self.slicing.batch_size)

    def close(self) -> None:
        """Stop the workers (dropping the iterator shuts them down)."""
        self._batches = None
