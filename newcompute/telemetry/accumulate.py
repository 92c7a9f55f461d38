"""Turning statistics on and off, and the device-side sums a paradigm accumulates them in.

A paradigm measures its statistics only while :func:`collecting_statistics`
is true, so with telemetry off its forward does exactly what it did before.
The core switches collection on around the passes it measures (``newcompute
inspect``, the training steps ``--telemetry-every`` logs). A plain global,
not a context variable: autograd runs backward on other threads, and a
backward quantizer must see the same answer as its forward.

:class:`StatisticSums` holds one float64 slot per sum a module keeps. It
updates in place (CUDA-graph capture replays the updates) and is
non-persistent, so checkpoints and state dicts are the same with or without
telemetry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

_collecting = False
_row_stride = 1


def collecting_statistics() -> bool:
    """Whether paradigms should accumulate their statistics in this forward (and its backward)."""
    return _collecting


@contextlib.contextmanager
def collect_statistics(enabled: bool = True, row_stride: int = 1) -> Iterator[None]:
    """Switch statistics collection on (or, with ``enabled=False``, off) inside the block.

    ``row_stride`` N > 1 asks paradigms to measure activations and gradients
    on every N-th row only (see :func:`statistics_rows`): a training step
    that ``--telemetry-every`` measures then costs little more than one that
    is not measured. ``newcompute inspect`` measures every row.
    """
    global _collecting, _row_stride
    if row_stride < 1:
        raise ValueError(f"collect_statistics row_stride must be at least 1, got {row_stride}")
    before = _collecting, _row_stride
    _collecting, _row_stride = enabled, row_stride
    try:
        yield
    finally:
        _collecting, _row_stride = before


def statistics_row_stride() -> int:
    """N of :func:`collect_statistics`: statistics see every N-th row of an activation (1: all of it)."""
    return _row_stride


def statistics_rows(tensor: torch.Tensor, whole: int = -1) -> torch.Tensor:
    """The part of an activation or gradient a statistic should look at: every N-th slice, as a view.

    ``whole`` is the dimension a statistic needs unbroken (an MX block's axis,
    a GEMM's reduction axis); the sample strides the other of the last two
    dimensions, so every sampled row (or column) is complete. With N = 1,
    or a tensor of fewer than two dimensions, it is ``tensor`` itself.
    Weights are small beside the activations of a batch: measure them whole.
    """
    if _row_stride == 1 or tensor.dim() < 2:
        return tensor
    sampled = -2 if whole in (-1, tensor.dim() - 1) else -1
    index = [slice(None)] * tensor.dim()
    index[sampled] = slice(None, None, _row_stride)
    return tensor[tuple(index)]


class StatisticSums(nn.Module):
    """Named float64 accumulators on one device, updated in place, never cast with the model.

    ``slots`` start at 0; those in ``minima`` start at +inf and those in
    ``maxima`` at −inf (running minimum and maximum). ``histograms`` maps a
    name to its number of bins, each bin a count starting at 0 (see
    :meth:`count`). Casting the model to bf16 leaves them float64, so counts
    stay exact up to 2⁵³.
    """

    def __init__(
        self,
        slots: Sequence[str],
        device: torch.device | None = None,
        *,
        minima: Sequence[str] = (),
        maxima: Sequence[str] = (),
        histograms: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        histograms = dict(histograms or {})
        names = [*slots, *minima, *maxima, *histograms]
        if len(set(names)) != len(names):
            raise ValueError(f"StatisticSums slot names must be unique, got {names}")
        self._index = {name: i for i, name in enumerate(names[: len(names) - len(histograms)])}
        self._initial = [0.0] * len(slots) + [float("inf")] * len(minima) + [float("-inf")] * len(maxima)
        self._bins: dict[str, tuple[int, int]] = {}
        start = 0
        for name, bins in histograms.items():
            if bins < 1:
                raise ValueError(f"StatisticSums histogram {name!r} needs at least one bin, got {bins}")
            self._bins[name] = (start, start + bins)
            start += bins
        self.register_buffer("sums", self._fresh(device), persistent=False)
        self.register_buffer("counts", self._fresh_counts(device), persistent=False)

    def _fresh(self, device: torch.device | None) -> torch.Tensor:
        return torch.tensor(self._initial, dtype=torch.float64, device=device)

    def _fresh_counts(self, device: torch.device | None) -> torch.Tensor:
        total = max((end for _, end in self._bins.values()), default=0)
        return torch.zeros(total, dtype=torch.float64, device=device)

    def count(self, histogram: str, bins: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Count each element of ``bins`` (integer bin indices) into ``histogram``, in place, no host sync.

        An index outside ``[0, number of bins)`` is not counted, nor is an
        element where the boolean ``keep`` is false: mask elements out this
        way rather than selecting them (a boolean selection reads its size on
        the host). Counted with ``torch.histc``, whose CUDA kernel sums in
        shared memory: a ``scatter_add_`` of one count per element into a few
        hot bins serialises on global atomics (it took a third of a measured
        clm-400m MX step on an H200).
        """
        start, end = self._bins[histogram]
        index = bins.reshape(-1).to(torch.float64)
        if keep is not None:
            index = torch.where(keep.reshape(-1), index, -1.0)
        self.counts[start:end].add_(torch.histc(index, bins=end - start, min=-0.5, max=end - start - 0.5))

    def histogram(self, name: str) -> torch.Tensor:
        """A histogram's counts, a 1-D float64 view on the device (read it only when logging)."""
        start, end = self._bins[name]
        return self.counts[start:end]

    def add(self, slot: str, value: torch.Tensor | float) -> None:
        """``slot += value``, in place on the device."""
        self.sums[self._index[slot]].add_(value)

    def minimum(self, slot: str, value: torch.Tensor) -> None:
        """``slot = min(slot, value)``, in place."""
        target = self.sums[self._index[slot]]
        target.copy_(torch.minimum(target, value.detach().to(torch.float64)))

    def maximum(self, slot: str, value: torch.Tensor) -> None:
        """``slot = max(slot, value)``, in place."""
        target = self.sums[self._index[slot]]
        target.copy_(torch.maximum(target, value.detach().to(torch.float64)))

    def __getitem__(self, slot: str) -> torch.Tensor:
        """The slot's current value, a 0-d float64 view on the device (read it only when logging)."""
        return self.sums[self._index[slot]]

    def slots(self, first: str, count: int) -> torch.Tensor:
        """A 1-D view of ``count`` slots in the order they were declared, from ``first`` on.

        A report that computes a statistic for many slots at once (every role's rate in one division)
        launches a few kernels per layer rather than a few per value: what a report costs, read for a
        few hundred layers every ``--telemetry-every`` steps.
        """
        start = self._index[first]
        if start + count > len(self._index):
            raise ValueError(f"StatisticSums has {len(self._index) - start} slots from {first!r} on, not {count}")
        return self.sums[start : start + count]

    def ratio(self, numerator: str, denominator: str) -> torch.Tensor:
        """``numerator / denominator``, and 0 while the denominator is still 0."""
        return self[numerator] / self[denominator].clamp(min=1.0)

    def untouched(self) -> bool:
        """Whether every slot still holds its initial value (a host read: for tests, not for training)."""
        return torch.equal(self.sums, self._fresh(self.sums.device)) and not bool(self.counts.any())

    @torch.no_grad()
    def reset(self) -> None:
        """Start every slot again from its initial value, and every histogram from zero counts."""
        self.sums.copy_(self._fresh(self.sums.device))
        self.counts.zero_()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> StatisticSums:
        before = {name: self._buffers[name] for name in ("sums", "counts")}
        super()._apply(fn, recurse)
        fresh = {"sums": self._fresh, "counts": self._fresh_counts}
        for name, old in before.items():
            after = self._buffers[name]
            if old is None or after is None:
                continue
            if old.is_meta and not after.is_meta:
                self._buffers[name] = fresh[name](after.device)
            elif after.dtype != torch.float64:
                self._buffers[name] = old.to(after.device)
        return self

    def extra_repr(self) -> str:
        return ", ".join([*self._index, *(f"{name}[{end - start}]" for name, (start, end) in self._bins.items())])
