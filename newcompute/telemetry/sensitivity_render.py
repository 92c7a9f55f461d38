"""A :class:`~newcompute.telemetry.sensitivity.SensitivityReport` as a ranked table and a bar chart PNG."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from newcompute.errors import ConfigError
from newcompute.telemetry.sensitivity import SensitivityReport


def sensitivity_table(report: SensitivityReport) -> Table:
    excluded = {u.name for u in report.excluded}
    table = Table(
        title=f"Sensitivity: loss {report.exact_loss:.4f} exact, {report.full_loss:.4f} with the paradigm everywhere"
    )
    for heading, justify in (("rank", "right"), ("unit", "left"), ("paradigm", "left")):
        table.add_column(heading, justify=justify, no_wrap=True)
    table.add_column("Δ loss, paradigm on it alone", justify="right")
    table.add_column("Δ loss, exact on it alone", justify="right")
    table.add_column("plan", justify="left")
    for rank, entry in enumerate(report.ranked(), 1):
        table.add_row(
            str(rank),
            entry.unit.name,
            ", ".join(entry.unit.paradigms),
            f"{entry.alone:+.4f}",
            f"{-entry.removed:+.4f}",
            "exact" if entry.unit.name in excluded else "",
        )
    return table


def sensitivity_plot(report: SensitivityReport, path: Path) -> Path:
    """Both loss changes per unit, most harmful at the top, as horizontal bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("The sensitivity plot needs matplotlib: pip install 'newcompute[plots]'.") from None
    ranked = report.ranked()[::-1]
    names = [entry.unit.name for entry in ranked]
    positions = range(len(ranked))
    figure, axes = plt.subplots(figsize=(8, 1.5 + 0.25 * len(ranked)))
    axes.barh([p + 0.2 for p in positions], [e.alone for e in ranked], height=0.4, label="paradigm on this unit alone")
    axes.barh([p - 0.2 for p in positions], [e.removed for e in ranked], height=0.4, label="gain of making it exact")
    axes.axvline(report.budget, color="grey", linestyle="--", linewidth=1, label=f"budget {report.budget:g}")
    axes.set_yticks(list(positions), names, fontsize=6)
    axes.set_xlabel("loss change (nats per token)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
