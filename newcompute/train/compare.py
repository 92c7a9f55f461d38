"""Side-by-side numbers and loss curves of several training runs.

Each run folder's ``summary.json`` (written when a run finishes) gives the
final and best validation loss, throughput and peak memory; a run that was
interrupted has none, so its numbers come from ``metrics.jsonl`` and the
columns it cannot know are shown as missing rather than guessed.
"""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from newcompute.errors import ConfigError
from newcompute.train.metrics import METRICS_FILE, read_metrics, read_summary


@dataclass(frozen=True)
class RunSummary:
    name: str
    paradigms: list[str]
    steps: int
    final_val_loss: float | None
    best_val_loss: float | None
    tokens_per_s: float | None
    peak_memory_bytes: int | None
    finished: bool
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)


def summarize(run_dir: Path, notify: Callable[[str], None] | None = None) -> RunSummary:
    """The comparable numbers of one run folder; ``notify`` hears of a torn last metrics line, left out."""
    records = read_metrics(run_dir, notify)
    summary = read_summary(run_dir)
    if not records and not summary:
        raise ConfigError(
            f"{run_dir} is not a training run: it has no {METRICS_FILE}. Pass run folders of 'newcompute train'."
        )
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    evals = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "eval"]
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    return RunSummary(
        name=run_dir.name,
        paradigms=summary.get("paradigms", []),
        steps=summary.get("steps", train[-1][0] if train else 0),
        final_val_loss=summary.get("final_val_loss", evals[-1][1] if evals else None),
        best_val_loss=summary.get("best_val_loss", min((v for _, v in evals), default=None)),
        tokens_per_s=summary.get("tokens_per_s", statistics.harmonic_mean(speeds) if speeds else None),
        peak_memory_bytes=summary.get("peak_memory_bytes"),
        finished=bool(summary),
        train_curve=train,
        val_curve=evals,
    )


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def comparison_table(runs: list[RunSummary]) -> Table:
    table = Table(title="Runs compared")
    for column in ("run", "paradigms", "steps", "final val loss", "best val loss", "tokens/s", "peak memory"):
        table.add_column(column, justify="left" if column in ("run", "paradigms") else "right")
    for run in runs:
        memory = None if run.peak_memory_bytes is None else run.peak_memory_bytes / 2**30
        table.add_row(
            run.name + ("" if run.finished else " (unfinished)"),
            ", ".join(run.paradigms) or "—",
            str(run.steps),
            _number(run.final_val_loss, ".4f"),
            _number(run.best_val_loss, ".4f"),
            _number(run.tokens_per_s, ",.0f"),
            "—" if memory is None else f"{memory:.2f} GiB",
        )
    return table


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, imported only when a plot is drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("Plotting needs matplotlib: pip install 'newcompute[plots]'.") from None
    return plt


def plot_curves(runs: list[RunSummary], path: Path) -> Path:
    """Training loss (lines) and validation loss (markers) of every run against step, as a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        if run.train_curve:
            steps, losses = zip(*run.train_curve, strict=True)
            axes.plot(steps, losses, color=color, alpha=0.6, linewidth=1, label=f"{run.name} train")
        if run.val_curve:
            steps, losses = zip(*run.val_curve, strict=True)
            axes.plot(steps, losses, color=color, marker="o", linewidth=2, label=f"{run.name} validation")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats per token)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


StatisticCurve = tuple[str, list[tuple[int, float]]]
"""A label (run and layer) and the ``(step, value)`` points of one statistic."""


def statistic_curves(run_dir: Path, statistic: str, layer: str) -> list[StatisticCurve]:
    """``statistic`` of every layer matching ``layer`` (a name or a glob) in the run's telemetry records."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run_dir):
        if record["kind"] != "telemetry" or not fnmatch.fnmatchcase(record["layer"], layer):
            continue
        value = record["statistics"].get(statistic)
        if isinstance(value, (int, float)):
            curves.setdefault(record["layer"], []).append((record["step"], float(value)))
    return [(f"{run_dir.name}: {name}", points) for name, points in curves.items()]


def _recorded(run_dirs: list[Path]) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    layers: set[str] = set()
    for run_dir in run_dirs:
        for record in read_metrics(run_dir):
            if record["kind"] == "telemetry":
                names.update(k for k, v in record["statistics"].items() if isinstance(v, (int, float)))
                layers.add(record["layer"])
    return names, layers


def plot_statistic(run_dirs: list[Path], statistic: str, layer: str, path: Path) -> Path:
    """One line per run and matching layer: ``statistic`` against step, from ``--telemetry-every`` records."""
    curves = [curve for run_dir in run_dirs for curve in statistic_curves(run_dir, statistic, layer)]
    if not curves:
        names, layers = _recorded(run_dirs)
        if not names:
            raise ConfigError(
                "None of these runs recorded telemetry: train with --telemetry-every N to plot a statistic."
            )
        shown = sorted(layers)[:5]
        raise ConfigError(
            f"No telemetry of statistic '{statistic}' for layer '{layer}' in these runs. Recorded statistics: "
            f"{', '.join(sorted(names))}; layers such as {', '.join(shown)} (a glob like '*.mlp.*' matches several)."
        )
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for label, points in curves:
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker=".", linewidth=1.5, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(statistic)
    axes.set_title(f"{statistic} of {layer}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
