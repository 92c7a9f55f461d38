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


def collecting_statistics() -> bool:
    """Whether paradigms should accumulate their statistics in this forward (and its backward)."""
    return _collecting


@contextlib.contextmanager
def collect_statistics(enabled: bool = True) -> Iterator[None]:
    """Switch statistics collection on (or, with ``enabled=False``, off) inside the block."""
    global _collecting
    before = _collecting
    _collecting = enabled
    try:
        yield
    finally:
        _collecting = before


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

    def count(self, histogram: str, bins: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add ``weights`` (1 each by default) to the bins ``bins`` of ``histogram``, in place, no host sync.

        ``bins`` holds integer bin indices, each in ``[0, number of bins)``;
        give excluded elements a weight of 0 rather than selecting them
        (a boolean selection would read its size on the host).
        """
        start, end = self._bins[histogram]
        target = self.counts[start:end]
        flat = bins.reshape(-1).to(torch.int64)
        added = torch.ones_like(flat, dtype=torch.float64) if weights is None else weights.reshape(-1).double()
        target.scatter_add_(0, flat, added)

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
