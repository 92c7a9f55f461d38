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
sums are new on every step. With the option off, none of this runs.

A measured step's records are not written in the step itself: it defers
them (:meth:`StepTelemetry.defer`), and once the step after it is queued,
:meth:`StepTelemetry.flush` hands them to a writer thread of their own on a
GPU, which reads them on a CUDA stream of its own (all layers' values in one
copy to the host, :func:`~newcompute.telemetry.statistics.read_statistics`)
and appends them to ``metrics.jsonl`` while the training thread goes on
queuing steps. One write is in flight at most; the training thread waits
for it before the next measured step clears the sums, before a CUDA graph
is captured, at a checkpoint and at the end of the run, and raises there
what the write raised (a plugin's failing statistics hook names the plugin
as it would have in place). On a CPU, or with a tracker that cannot be
written from another thread (:data:`THREAD_SAFE_TRACKERS`), they are written
in place, on the training thread; either way they are the same records, in
the same order within a step, but a thread's may follow the ``train`` lines
of the steps after theirs.

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
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from newcompute.composer import REPORT_ATTR, report_of
from newcompute.plugins import Registry
from newcompute.telemetry.accumulate import StatisticSums, collect_statistics
from newcompute.telemetry.error import ErrorProbe, ProductError, probe_errors
from newcompute.telemetry.statistics import LayerStatistic, Statistic, read_statistics
from newcompute.train.background import BackgroundWork
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


THREAD_SAFE_TRACKERS = ("tensorboard",)
"""The trackers a measured step's records may be logged to from the writer thread.

A ``SummaryWriter`` queues its events under a lock and takes steps in any
order. MLflow keeps its active run per thread (logged from another one, the
values would go to a new run) and W&B drops a step below one it has already
logged (the training thread has logged later steps by then): with either, or
a tracker not known here, the records are written on the training thread.
"""


def writes_in_background(model: nn.Module) -> bool:
    """Whether a measured step's records are written on a thread of their own: on a GPU, not on a CPU.

    On a GPU the training thread mostly waits for kernels it has queued (a
    replayed graph, the loss read), so the writer's host work fits in those
    waits. On a CPU the step itself is the host's work, on every core: the
    writer would only compete for those cores and for the interpreter, and
    finish no sooner; written in place, a CPU run's ``metrics.jsonl`` also
    keeps its lines in step order.
    """
    return _on_gpu(model)


def _on_gpu(model: nn.Module) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.is_cuda


@dataclass(frozen=True)
class Deferred:
    """A measured step waiting to be written: its number, the event its GPU work ends at, its error probe."""

    step: int
    measured: torch.cuda.Event | None
    probe: ErrorProbe | None


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
        self.background = self.model is not None and writes_in_background(self.model)
        self._probe: ErrorProbe | None = None
        self._pending: Deferred | None = None
        self._reader: torch.cuda.Stream | None = None
        self._writer = BackgroundWork("newcompute-telemetry")

    @property
    def capturable(self) -> bool:
        """Whether a measured step may replay a captured graph (not while the error probe runs)."""
        return not self.error

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) is measured."""
        return self.every is not None and self.model is not None and step % self.every == 0

    @contextmanager
    def measuring(self, active: bool) -> Iterator[None]:
        """Collect statistics inside the block when ``active``, starting from cleared sums (and probe errors).

        The previous measured step's records must have been handed to :meth:`flush`; their write is waited
        for here, before the sums it reads are cleared.
        """
        if not active or self.model is None:
            yield
            return
        self.wait()
        for module in self.model.modules():
            if isinstance(module, StatisticSums):
                module.reset()
        with ExitStack() as stack:
            stack.enter_context(collect_statistics(row_stride=self.stride))
            if self.error:
                self._probe = stack.enter_context(probe_errors(self.model))
            yield

    def defer(self, step: int) -> None:
        """Leave measured step ``step``'s records for :meth:`flush`, called once the next step is queued.

        Reading a few hundred layers' statistics is host work (plugin hooks, small kernels to launch, JSON),
        and while a replayed graph runs the host only waits: done then, it costs nothing. The sums are not
        touched before the next measured step, which waits for the write first. On a GPU the reading runs on
        a stream of its own, after an event recorded now: its host syncs then wait for the measured step
        alone, not for the steps queued behind it.
        """
        measured = None
        if self.model is not None and _on_gpu(self.model):
            measured = torch.cuda.Event()
            measured.record()
        self._pending = Deferred(step, measured, self._probe)
        self._probe = None

    def flush(self, metrics: MetricsLog, accelerator: Accelerator) -> None:
        """Write the deferred step's records, if any: on the writer thread (see :data:`THREAD_SAFE_TRACKERS`).

        One write at most is in flight: a second waits for the first. A write that failed raises here, or in
        :meth:`wait`, on the training thread, as it would have raised written in place.
        """
        if self._writer.finished:
            self._writer.wait()
        if self._pending is None:
            return
        job, self._pending = self._pending, None
        if self.model is None or not accelerator.is_main_process:
            return
        if job.measured is not None and self._reader is None:
            self._reader = torch.cuda.Stream(next(self.model.parameters()).device)
        safe = all(tracker.name in THREAD_SAFE_TRACKERS for tracker in accelerator.trackers)
        if self.background and safe:
            self._writer.start(lambda: self._write(job, metrics, accelerator))
        else:
            self._write(job, metrics, accelerator)

    def wait(self) -> None:
        """Block until the write in flight, if any, is done; raise what it raised.

        The training thread calls it before anything the write must not overlap: clearing the sums, capturing
        a CUDA graph (a capture fails if another thread syncs or allocates pinned memory meanwhile), saving a
        checkpoint, ending the run.
        """
        self._writer.wait()

    def close(self) -> None:
        """Let the write in flight finish, raising nothing: for a run already unwinding from an error."""
        self._writer.join()

    def _write(self, job: Deferred, metrics: MetricsLog, accelerator: Accelerator) -> None:
        if job.measured is None or self._reader is None:
            self.write(job.step, job.probe, metrics, accelerator)
            return
        with torch.cuda.device(self._reader.device), torch.cuda.stream(self._reader):
            self._reader.wait_event(job.measured)
            self.write(job.step, job.probe, metrics, accelerator)

    def write(self, step: int, probe: ErrorProbe | None, metrics: MetricsLog, accelerator: Accelerator) -> None:
        """Read the statistics (one copy to the host per device) and log them, with ``probe``'s errors if any."""
        if self.model is None or not accelerator.is_main_process:
            return
        report = report_of(self.model)
        stats = read_statistics(
            self.model, self.registry, optimizer=self.optimizer, uses=report.uses if report else None
        )
        if probe is not None:
            stats = error_statistics(self.model, probe.results()) + stats
        for record in records(step, stats, self.stride):
            metrics.write(record)
        if stats and accelerator.trackers:
            accelerator.log(scalars(stats), step=step)
            log_histograms(accelerator, stats, step)
