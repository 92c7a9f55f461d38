"""The comparable numbers of one training run, read from its folder.

Each run folder's ``summary.json`` (written when a run finishes) gives the
final validation loss, throughput, peak memory and, where the paradigms
provide them, cost estimates; ``metrics.jsonl`` gives the curves. Two kinds
of validation are kept apart because they are not the same measurement:
the periodic evaluations score the first ``eval_batches`` micro-batches of
the validation blocks, the final one scores all of them. So
``final_val_loss`` is only ever the final full-set evaluation (an
interrupted run has none, and shows it as missing), and
``best_periodic_val_loss`` is the best of the partial ones.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newcompute.errors import ConfigError
from newcompute.train.metrics import METRICS_FILE, read_metrics, read_summary

LM_EVAL_FILE = "lm_eval.json"
"""Scores of ``newcompute eval --tasks`` saved in the run folder: ``{task: {metric: value}}``."""


@dataclass(frozen=True)
class Curve:
    """One measured series: (optimizer step, tokens trained on, loss) per point."""

    points: list[tuple[int, int, float]] = field(default_factory=list)

    def xy(self, x: str) -> tuple[list[int], list[float]]:
        """The series against ``x`` = ``"tokens"`` or ``"steps"``."""
        column = 1 if x == "tokens" else 0
        return [p[column] for p in self.points], [p[2] for p in self.points]


@dataclass(frozen=True)
class RunSummary:
    name: str
    paradigms: list[str]
    steps: int
    tokens: int | None
    final_val_loss: float | None
    """The final evaluation on the full validation set; None until the run finished."""
    final_val_ppl: float | None
    best_periodic_val_loss: float | None
    """The best periodic (partial: ``eval_batches`` micro-batches) validation loss."""
    tokens_per_s: float | None
    peak_memory_bytes: int | None
    finished: bool
    train_curve: Curve = field(default_factory=Curve)
    val_curve: Curve = field(default_factory=Curve)
    """Periodic (partial) evaluations only."""
    costs: dict[str, Any] = field(default_factory=dict)
    """``summary.json``'s ``cost_estimates``: estimated, not measured."""
    lm_eval: dict[str, dict[str, float]] = field(default_factory=dict)


def _tokens_per_step(records: list[dict[str, Any]], summary: dict[str, Any]) -> int | None:
    for record in records:
        if record["kind"] == "train" and record["step"] > 0 and isinstance(record.get("tokens"), int):
            return record["tokens"] // record["step"]
    if summary.get("steps") and isinstance(summary.get("tokens"), int):
        return summary["tokens"] // summary["steps"]
    return None


def read_lm_eval(run_dir: Path) -> dict[str, dict[str, float]]:
    path = run_dir / LM_EVAL_FILE
    if not path.is_file():
        return {}
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}): the file was edited or damaged.") from None
    if not isinstance(scores, dict):
        raise ConfigError(f"{path} is not a table of lm-eval scores (a JSON object of tasks).")
    return {
        str(task): {str(k).removesuffix(",none"): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for task, metrics in scores.items()
        if isinstance(metrics, dict)
    }


def summarize(run_dir: Path, notify: Callable[[str], None] | None = None) -> RunSummary:
    """The comparable numbers of one run folder; ``notify`` hears of a torn last metrics line, left out."""
    records = read_metrics(run_dir, notify)
    summary = read_summary(run_dir)
    if not records and not summary:
        raise ConfigError(
            f"{run_dir} is not a training run: it has no {METRICS_FILE}. Pass run folders of 'newcompute train'."
        )
    per_step = _tokens_per_step(records, summary)

    def tokens(step: int) -> int:
        return step * per_step if per_step is not None else 0

    train = [(r["step"], r.get("tokens", tokens(r["step"])), r["loss"]) for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    periodic = [(r["step"], tokens(r["step"]), r["val_loss"]) for r in evals if not r.get("final")]
    final = next((r for r in reversed(evals) if r.get("final")), None)
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    steps = summary.get("steps", train[-1][0] if train else 0)
    return RunSummary(
        name=run_dir.name,
        paradigms=summary.get("paradigms", []),
        steps=steps,
        tokens=summary.get("tokens", tokens(steps) if per_step is not None else None),
        final_val_loss=summary.get("final_val_loss", final["val_loss"] if final else None),
        final_val_ppl=summary.get("final_val_ppl", final.get("val_ppl") if final else None),
        best_periodic_val_loss=min((loss for *_, loss in periodic), default=None),
        tokens_per_s=summary.get("tokens_per_s", statistics.harmonic_mean(speeds) if speeds else None),
        peak_memory_bytes=summary.get("peak_memory_bytes"),
        finished=bool(summary),
        train_curve=Curve(train),
        val_curve=Curve(periodic),
        costs=summary.get("cost_estimates", {}),
        lm_eval=read_lm_eval(run_dir),
    )


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, imported only when a plot is drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("Plotting needs matplotlib: pip install 'newcompute[plots]'.") from None
    return plt


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
    plt = pyplot()
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
