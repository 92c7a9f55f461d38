"""``--telemetry-every N``: the paradigms' per-layer statistics of every N-th step, logged as they happen.

Only the measured steps collect: statistics collection is switched on for
that step's forward, backward and optimizer step, after clearing what the
model's :class:`~newcompute.StatisticSums` held, so each record describes
that step alone. Paradigms measure activations and gradients on every
``row_stride``-th token row (``--telemetry-stride``, 16 by default; see
:func:`newcompute.statistics_rows`), which is what keeps a measured step
close to the cost of any other: the rates and ranges of a few hundred
thousand elements per tensor are estimates as good as those of all of
them, for a fraction of the passes. Under ``--cuda-graphs`` a measured step replays a capture
of its own, recorded with collection on (see
:class:`~newcompute.train.graphs.GraphedMicroStep`); with
``--telemetry-error`` it runs eagerly, since the probe's exact products and
sums are new on every step. A measured step's records are read and written
while the GPU runs the step after it (:meth:`StepTelemetry.defer`). With
the option off, none of this runs.

Each layer's statistics become one ``metrics.jsonl`` line,
``{"kind": "telemetry", "step", "layer", "paradigm", "row_stride", "statistics": {name: value}}``,
and tracker scalars ``telemetry/LAYER/NAME``; a vector statistic (a
histogram, a series) is a list in the record, and goes to trackers as
described in :mod:`newcompute.train.telemetry_trackers`.

With ``--telemetry-error`` the measured step also runs the core's error
probe (:func:`newcompute.telemetry.error.probe_errors`): every replaced
product's output is compared with the exact product on the same inputs,
and the record gains ``relative_error``, ``snr_db`` and ``cosine``
(``qk_…`` and ``pv_…`` for the attention products), over every forward of
that step. ``snr_db`` is left out for an exact product (its SNR is infinite).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from newcompute.composer import REPORT_ATTR, report_of
from newcompute.plugins import Registry
from newcompute.telemetry.accumulate import StatisticSums, collect_statistics
from newcompute.telemetry.error import ErrorProbe, ProductError, probe_errors
from newcompute.telemetry.statistics import LayerStatistic, Statistic, read_statistics
from newcompute.train.metrics import MetricsLog
from newcompute.train.telemetry_trackers import KIND, log_histograms, scalars


def composed_model(model: nn.Module) -> nn.Module | None:
    """The module ``apply`` transformed, inside whatever wraps it (DDP, FSDP, PEFT, torch.compile).

    The module holding the report itself: PEFT's wrappers forward unknown attributes to the model they
    wrap, so they answer :func:`report_of` too, but the report's layer names are not theirs.
    """
    return next((m for m in model.modules() if REPORT_ATTR in vars(m)), None)


ERROR_STATISTICS = (
    ("relative_error", "‖simulated − exact‖ / ‖exact‖ over the step's outputs", "ratio"),
    ("snr_db", "10·log10(‖exact‖² / ‖simulated − exact‖²)", "dB"),
    ("cosine", "Cosine similarity of the simulated and exact outputs", "ratio"),
)


def error_statistics(model: nn.Module, errors: list[ProductError]) -> list[LayerStatistic]:
    """The probe's per-product errors as statistics of their layer (``qk_``/``pv_`` for attention products)."""
    report = report_of(model)
    owners = report.owners if report is not None else {}
    out = []
    for error in errors:
        prefix = "" if error.kind == "linear" else f"{error.kind}_"
        for name, description, unit in ERROR_STATISTICS:
            value = getattr(error, name)
            if math.isfinite(value):
                stat = Statistic(f"{prefix}{name}", description, unit)
                out.append(LayerStatistic(error.name, owners.get(error.name, ""), stat, value))
    return out


def records(step: int, stats: list[LayerStatistic], row_stride: int = 1) -> list[dict[str, Any]]:
    """One ``metrics.jsonl`` record per layer, its statistics in the order the plugin reported them."""
    by_layer: dict[tuple[str, str], dict[str, float | list[float]]] = {}
    for s in stats:
        by_layer.setdefault((s.layer, s.paradigm), {})[s.statistic.name] = s.value
    return [
        {"kind": KIND, "step": step, "layer": layer, "paradigm": paradigm, "row_stride": row_stride,
         "statistics": values}
        for (layer, paradigm), values in by_layer.items()
    ]


class StepTelemetry:
    """Decides which steps are measured, measures them, and writes what was measured."""

    def __init__(
        self,
        every: int | None,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        registry: Registry,
        error: bool = False,
        stride: int = 1,
    ) -> None:
        self.every = every
        self.stride = stride
        self.model = composed_model(model)
        self.optimizer = getattr(optimizer, "optimizer", optimizer)
        self.registry = registry
        self.error = error
        self._probe: ErrorProbe | None = None
        self._pending: int | None = None
        self._measured: torch.cuda.Event | None = None
        self._reader: torch.cuda.Stream | None = None

    @property
    def capturable(self) -> bool:
        """Whether a measured step may replay a captured graph (not while the error probe runs)."""
        return not self.error

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) is measured."""
        return self.every is not None and self.model is not None and step % self.every == 0

    @contextmanager
    def measuring(self, active: bool) -> Iterator[None]:
        """Collect statistics inside the block when ``active``, starting from cleared sums (and probe errors)."""
        if not active or self.model is None:
            yield
            return
        for module in self.model.modules():
            if isinstance(module, StatisticSums):
                module.reset()
        with ExitStack() as stack:
            stack.enter_context(collect_statistics(row_stride=self.stride))
            if self.error:
                self._probe = stack.enter_context(probe_errors(self.model))
            yield

    def defer(self, step: int) -> None:
        """Leave measured step ``step``'s records for :meth:`flush`, called while the GPU runs the next step.

        Reading a few hundred layers' statistics is host work (plugin hooks, small kernels to launch, JSON),
        and while a replayed graph runs the host only waits: done then, it costs nothing. The sums are not
        touched before the next measured step, which flushes first. On a GPU the reading runs on a stream of
        its own, after an event recorded now: its host syncs then wait for the measured step alone, not for
        the next step queued behind it.
        """
        self._pending = step
        if torch.cuda.is_available() and self.model is not None and next(self.model.parameters()).is_cuda:
            self._measured = torch.cuda.Event()
            self._measured.record()

    def flush(self, metrics: MetricsLog, accelerator: Accelerator) -> int:
        """Write the deferred step's records, if any; returns the records written."""
        if self._pending is None:
            return 0
        step, self._pending = self._pending, None
        measured, self._measured = self._measured, None
        if measured is None:
            return self.write(step, metrics, accelerator)
        if self._reader is None:
            self._reader = torch.cuda.Stream()
        self._reader.wait_event(measured)
        with torch.cuda.stream(self._reader):
            return self.write(step, metrics, accelerator)

    def write(self, step: int, metrics: MetricsLog, accelerator: Accelerator) -> int:
        """Read the statistics (one host sync per device) and log them; returns the records written."""
        if self.model is None or not accelerator.is_main_process:
            return 0
        report = report_of(self.model)
        stats = read_statistics(
            self.model, self.registry, optimizer=self.optimizer, uses=report.uses if report else None
        )
        if self._probe is not None:
            stats = error_statistics(self.model, self._probe.results()) + stats
            self._probe = None
        written = records(step, stats, self.stride)
        for record in written:
            metrics.write(record)
        if stats and accelerator.trackers:
            accelerator.log(scalars(stats), step=step)
            log_histograms(accelerator, stats, step)
        return len(written)
