"""An :class:`~newcompute.telemetry.inspect.InspectReport` as a rich table, JSON, CSV or a heatmap PNG.

The JSON and CSV layouts are the documented schema (docs/telemetry.md);
matplotlib is imported only when a heatmap is asked for.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from newcompute.errors import ConfigError
from newcompute.telemetry.inspect import ERROR_COLUMNS, InspectReport

TABLE_STATISTICS = 6
"""Paradigm statistics shown in the table when none are chosen; JSON and CSV always hold all of them."""


def chosen_columns(report: InspectReport, chosen: list[str] | None) -> list[str]:
    """The statistic columns to show: those named (each must exist), else the first :data:`TABLE_STATISTICS`."""
    names = report.statistic_names()
    if not chosen:
        return names[:TABLE_STATISTICS]
    vectors = [name for name in chosen if name in report.vector_names()]
    if vectors:
        raise ConfigError(
            f"--statistic {', '.join(vectors)}: a histogram or series, not a table column; it is in "
            "--format json (a list per row) and --format csv (one NAME[BIN] column per bin)."
        )
    unknown = [name for name in chosen if name not in names and name not in ERROR_COLUMNS]
    if unknown:
        listed = ", ".join([*ERROR_COLUMNS, *names]) or "none"
        raise ConfigError(f"--statistic {', '.join(unknown)}: not measured here. Measured: {listed}.")
    return [name for name in chosen if name not in ERROR_COLUMNS]


def _shown(value: float | None, column: str) -> str:
    if value is None:
        return "—"
    if column == "snr_db":
        return "exact" if math.isinf(value) and value > 0 else f"{value:.1f}"
    if column == "cosine":
        return f"{value:.6f}"
    return f"{value:.4g}"


def inspect_table(report: InspectReport, columns: list[str], title: str) -> Table:
    """Rows in model order; the paradigm column only when several paradigms own layers."""
    several = len({row.paradigm for row in report.rows}) > 1
    table = Table(title=title)
    table.add_column("layer", no_wrap=True)
    table.add_column("product", no_wrap=True)
    if several:
        table.add_column("paradigm", no_wrap=True)
    units = {name: stat.unit for name, stat in report.described.items()}
    for heading in ("rel. error", "SNR dB", "cosine"):
        table.add_column(heading, justify="right", no_wrap=True)
    for name in columns:
        table.add_column(f"{name}\n({units[name]})", justify="right")
    for row in report.rows:
        values = [_shown(row.value(c), c) for c in (*ERROR_COLUMNS, *columns)]
        table.add_row(row.layer, row.product, *([row.paradigm or "—"] if several else []), *values)
    return table


def to_json(report: InspectReport, context: dict[str, Any]) -> str:
    return json.dumps(report.to_dict(context), indent=2, allow_nan=False) + "\n"


def to_csv(report: InspectReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.csv_header())
    writer.writerows(report.csv_rows())
    return buffer.getvalue()


def _normalised(values: list[float | None]) -> list[float]:
    """Each column scaled to [0, 1] over its finite values (NaN where missing), so units need not agree."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    top = max(finite, default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(math.nan)
            continue
        v = top if math.isinf(v) and v > 0 else (low if math.isinf(v) else v)
        out.append(0.5 if high == low else (v - low) / (high - low))
    return out


def heatmap(report: InspectReport, path: Path, columns: list[str] | None = None) -> Path:
    """Layers (rows) × statistics (columns) as a PNG, each column coloured from its own minimum to maximum."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--heatmap needs matplotlib: pip install 'newcompute[plots]'.") from None
    columns = [*ERROR_COLUMNS, *(columns if columns is not None else report.statistic_names())]
    if not report.rows:
        raise ConfigError("Nothing to plot: the model has no replaced layers or intercepted attention.")
    grid = [_normalised([row.value(c) for row in report.rows]) for c in columns]
    cells = [[grid[j][i] for j in range(len(columns))] for i in range(len(report.rows))]
    labels = [f"{row.layer} [{row.product}]" for row in report.rows]
    figure, axes = plt.subplots(figsize=(1.2 + 0.45 * len(columns), 1.5 + 0.22 * len(labels)))
    image = axes.imshow(cells, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=6)
    figure.colorbar(image, ax=axes, label="per-statistic min → max")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
