"""PNG plots of results: loss curves against tokens (or steps), and final loss against an axis value.

Curves are drawn against tokens by default: runs with different batch or
block sizes have seen different amounts of text at the same step, so steps
compare them unfairly. Only periodic (partial) evaluations are drawn as a
curve; the final full-set evaluation is a separate marker, since it scores
more blocks and would make a false step in the line.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from newcompute.errors import ConfigError
from newcompute.study.results import ESTIMATED, MEASURED, Results
from newcompute.train.compare import RunSummary, pyplot

X_LABELS = {"tokens": "tokens trained on", "steps": "optimizer step"}


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def curves_figure(runs: list[RunSummary], x: str = "tokens") -> Any:
    """The figure of every run's training loss (line), periodic validation loss (markers) and final loss (star)."""
    if x not in X_LABELS:
        raise ConfigError(f"--x {x!r}: the curves are drawn against tokens or steps.")
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        if run.train_curve.points:
            axes.plot(*run.train_curve.xy(x), color=color, alpha=0.6, linewidth=1, label=f"{run.name} train")
        if run.val_curve.points:
            axes.plot(
                *run.val_curve.xy(x), color=color, marker="o", linewidth=2, label=f"{run.name} validation (partial)"
            )
        if run.final_val_loss is not None:
            end = run.tokens if x == "tokens" else run.steps
            final = f"{run.name} final (full set)"
            axes.plot([end], [run.final_val_loss], color=color, marker="*", markersize=12, ls="none", label=final)
    axes.set_xlabel(X_LABELS[x])
    axes.set_ylabel("loss (nats per token)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def plot_curves(runs: list[RunSummary], path: Path, x: str = "tokens") -> Path:
    plt = pyplot()
    figure = curves_figure(runs, x)
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def axis_figure(results: Results, axis: str, seed_axis: str = "seed") -> Any:
    """Final loss against ``axis``: one line per combination of the other axes, mean ± std over seeds."""
    axes_keys = [c for c in results.columns if c not in ("run", "status", "paradigms") and not _is_metric(c)]
    if axis not in axes_keys:
        raise ConfigError(f"--axis {axis!r} is not an axis of the sweep. Axes: {', '.join(axes_keys) or 'none'}.")
    others = [key for key in axes_keys if key not in (axis, seed_axis)]
    groups: dict[tuple[Any, ...], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in results.rows:
        if row.get("final_val_loss") is not None and row.get(axis) is not None:
            groups[tuple(row.get(k) for k in others)][row[axis]].append(row["final_val_loss"])
    if not groups:
        raise ConfigError(f"No point of the sweep has a final validation loss and a value of {axis} yet.")
    values = list(dict.fromkeys(row.get(axis) for row in results.rows if row.get(axis) is not None))
    numeric = all(_number(v) is not None for v in values)
    position = {v: (_number(v) if numeric else i) for i, v in enumerate(values)}
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for key, by_value in groups.items():
        xs = sorted(by_value, key=lambda v: position[v])
        means = [statistics.fmean(by_value[v]) for v in xs]
        spread = [statistics.stdev(by_value[v]) if len(by_value[v]) > 1 else 0.0 for v in xs]
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True)) or "all points"
        ax.errorbar([position[v] for v in xs], means, yerr=spread, marker="o", capsize=4, label=label)
    if not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_xlabel(axis)
    ax.set_ylabel(f"final validation loss (mean ± std over {seed_axis})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def _is_metric(column: str) -> bool:
    return column in MEASURED or column in ESTIMATED or column.startswith("lm_eval.")


def plot_against_axis(results: Results, axis: str, path: Path) -> Path:
    plt = pyplot()
    figure = axis_figure(results, axis)
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)
