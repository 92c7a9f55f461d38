"""Vector statistics on trackers: histograms where a tracker draws them, scalar summaries everywhere.

Scalars go to every tracker as ``telemetry/LAYER/NAME``. A vector statistic
(a :class:`~newcompute.Statistic` with ``bins``) cannot be one scalar, so
every tracker gets its summaries, ``telemetry/LAYER/NAME/SUMMARY`` (a
histogram's count-weighted ``mean`` bin and ``count``; a series' ``max`` and
``newest``), and TensorBoard also gets the whole thing as a histogram under
``telemetry/LAYER/NAME``: a histogram's bins as they were counted, a series'
entries as the values of a distribution.
"""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator

from newcompute.telemetry.statistics import LayerStatistic, Statistic

KIND = "telemetry"
HISTOGRAM_TRACKERS = ("tensorboard",)
"""The accelerate trackers whose ``.tracker`` draws histograms (a ``SummaryWriter``)."""


def tag(stat: LayerStatistic) -> str:
    return f"{KIND}/{stat.layer}/{stat.statistic.name}"


def summaries(statistic: Statistic, values: list[float]) -> dict[str, float]:
    """The scalar summaries of a vector statistic's ``values`` (see the module docstring)."""
    if statistic.is_histogram:
        total = sum(values)
        mean = sum(b * c for b, c in zip(statistic.bins, values)) / total if total > 0 else 0.0
        return {"mean": mean, "count": total}
    return {"max": max(values), "newest": values[0]}


def scalars(stats: list[LayerStatistic]) -> dict[str, float]:
    """Everything every tracker gets: scalar statistics as they are, vector ones as their summaries."""
    out: dict[str, float] = {}
    for stat in stats:
        if isinstance(stat.value, list):
            out.update({f"{tag(stat)}/{k}": v for k, v in summaries(stat.statistic, stat.value).items()})
        else:
            out[tag(stat)] = stat.value
    return out


def bucket_limits(bins: tuple[float, ...]) -> list[float]:
    """TensorBoard bucket ``i`` covers ``(limit[i-1], limit[i]]``: put each limit halfway to the next bin."""
    if len(bins) == 1:
        return [bins[0] + 0.5]
    halves = [(a + b) / 2 for a, b in zip(bins, bins[1:])]
    return [*halves, bins[-1] + (bins[-1] - bins[-2]) / 2]


def _raw_histogram(statistic: Statistic, counts: list[float]) -> dict[str, Any] | None:
    """``add_histogram_raw``'s arguments for counted ``bins``, the empty buckets at either end left out."""
    used = [i for i, c in enumerate(counts) if c > 0]
    if not used:
        return None
    first, last = used[0], used[-1] + 1
    bins = statistic.bins
    return {
        "min": bins[first],
        "max": bins[last - 1],
        "num": sum(counts),
        "sum": sum(b * c for b, c in zip(bins, counts)),
        "sum_squares": sum(b * b * c for b, c in zip(bins, counts)),
        "bucket_limits": bucket_limits(bins)[first:last],
        "bucket_counts": counts[first:last],
    }


def log_histograms(accelerator: Accelerator, stats: list[LayerStatistic], step: int) -> int:
    """Draw every vector statistic on the trackers that draw histograms; returns how many were drawn."""
    writers = [t.tracker for t in accelerator.trackers if t.name in HISTOGRAM_TRACKERS]
    drawn = 0
    for writer in writers:
        for stat in stats:
            if not isinstance(stat.value, list):
                continue
            if stat.statistic.is_histogram:
                raw = _raw_histogram(stat.statistic, stat.value)
                if raw is None:
                    continue
                writer.add_histogram_raw(tag(stat), global_step=step, **raw)
            else:
                import numpy as np

                writer.add_histogram(tag(stat), np.asarray(stat.value, dtype=np.float64), global_step=step)
            drawn += 1
    return drawn
