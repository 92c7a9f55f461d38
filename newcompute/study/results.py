"""One results table for runs or a sweep, exported as a rich table, Markdown, CSV or JSON.

A row per run: its axis values (for a sweep), the final full-set validation
loss and perplexity, the loss difference to its baseline, the best periodic
(partial) validation loss, throughput, peak memory, and, when the run has
them, cost estimates (labelled ``estimated``: computed from published
figures, not measured) and lm-eval scores. The columns are the same in
every format; a value that is not known is empty (CSV, Markdown ``—``) or
``null`` (JSON), never a guess.

The JSON export is ``{"columns": [...], "rows": [{column: value}, ...]}``,
with numbers as numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from newcompute.errors import ConfigError
from newcompute.study.folder import SweepFolder, read_manifest
from newcompute.train.compare import RunSummary, summarize
from newcompute.train.metrics import METRICS_FILE, SUMMARY_FILE

Format = Literal["table", "md", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "md", "csv", "json")

MEASURED = (
    "steps",
    "tokens",
    "final_val_loss",
    "final_val_ppl",
    "delta_final_val_loss",
    "best_periodic_val_loss",
    "tokens_per_s",
    "peak_memory_bytes",
)
COST_KEYS = ("matmul_energy_vs_bf16", "bytes_moved_vs_bf16", "matmul_throughput_vs_bf16")
"""The estimates a cost hook gives, as ratios to the same model computing in bf16."""
ESTIMATED = tuple(f"estimated_{key}" for key in COST_KEYS)

HEADERS = {
    "run": "run",
    "status": "status",
    "paradigms": "paradigms",
    "steps": "steps",
    "tokens": "tokens",
    "final_val_loss": "final val loss (full set)",
    "final_val_ppl": "final ppl",
    "delta_final_val_loss": "Δ final loss vs baseline",
    "best_periodic_val_loss": "best periodic val loss (partial)",
    "tokens_per_s": "tokens/s",
    "peak_memory_bytes": "peak memory",
    "estimated_matmul_energy_vs_bf16": "matmul energy ×bf16 (estimated)",
    "estimated_bytes_moved_vs_bf16": "bytes moved ×bf16 (estimated)",
    "estimated_matmul_throughput_vs_bf16": "matmul throughput ×bf16 (estimated)",
}


@dataclass(frozen=True)
class Results:
    columns: list[str]
    rows: list[dict[str, Any]]
    baseline_note: str = ""


def _row(run: str, summary: RunSummary | None, baseline: RunSummary | None) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run}
    if summary is None:
        return row | {"status": "not started"}
    row |= {
        "status": "finished" if summary.finished else "unfinished",
        "paradigms": "+".join(summary.paradigms) or "none",
        "steps": summary.steps,
        "tokens": summary.tokens,
        "final_val_loss": summary.final_val_loss,
        "final_val_ppl": summary.final_val_ppl,
        "best_periodic_val_loss": summary.best_periodic_val_loss,
        "tokens_per_s": summary.tokens_per_s,
        "peak_memory_bytes": summary.peak_memory_bytes,
    }
    if baseline is not None and summary.final_val_loss is not None and baseline.final_val_loss is not None:
        row["delta_final_val_loss"] = summary.final_val_loss - baseline.final_val_loss
    total = summary.costs.get("total", {})
    row |= {f"estimated_{key}": total.get(key) for key in COST_KEYS if key in total}
    for task, metrics in summary.lm_eval.items():
        row |= {f"lm_eval.{task}.{metric}": value for metric, value in metrics.items()}
    return row


def _columns(rows: list[dict[str, Any]], first: Sequence[str]) -> list[str]:
    present = {key for row in rows for key in row}
    fixed = ["run", *first, "status", "paradigms", *MEASURED]
    optional = [key for key in ESTIMATED if key in present]
    optional += sorted(key for key in present if key.startswith("lm_eval."))
    return list(dict.fromkeys([*fixed, *optional]))  # a paradigms axis is the paradigms column


def _is_run(folder: Path) -> bool:
    return (folder / METRICS_FILE).is_file() or (folder / SUMMARY_FILE).is_file()


def run_results(
    run_dirs: Sequence[Path], baseline: str | None = None, notify: Callable[[str], None] | None = None
) -> Results:
    """Rows for run folders; ``baseline`` (a run's folder name) is what Δ is measured against."""
    summaries = [summarize(run_dir, notify) for run_dir in run_dirs]
    names = [run_dir.name for run_dir in run_dirs]
    base = None
    if baseline is not None:
        if baseline not in names:
            raise ConfigError(f"--baseline {baseline!r} is not one of the runs compared: {', '.join(names)}.")
        base = summaries[names.index(baseline)]
    rows = [_row(name, summary, base) for name, summary in zip(names, summaries, strict=True)]
    note = f"Δ is measured against {baseline}." if baseline else ""
    return Results(_columns(rows, []), rows, note)


def _baseline_name(manifest: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """The point ``entry`` is compared with: its own axis values, with the baseline's in their place."""
    baseline = manifest.get("baseline")
    if not baseline:
        return None
    given = {k: [v] if k == "paradigms" and isinstance(v, str) else v for k, v in baseline.items()}
    wanted = {**entry["values"], **given}
    paradigms = wanted.get("paradigms", entry["paradigms"])
    wanted = {key: value for key, value in wanted.items() if not _paradigm_axis_off(key, paradigms)}
    return next((str(other["name"]) for other in manifest["points"] if other["values"] == wanted), None)


def _paradigm_axis_off(key: str, paradigms: Sequence[str]) -> bool:
    """An axis on a field of a paradigm the point does not apply: the point has no value for it."""
    parts = key.split(".")
    return len(parts) > 2 and parts[0] == "paradigm" and parts[1] not in paradigms


def sweep_rows(root: Path, notify: Callable[[str], None] | None = None) -> Results:
    """Rows for every point of a sweep, with its axis values as the first columns (labels, as in names)."""
    folder = SweepFolder(root)
    manifest = read_manifest(root)
    entries = manifest["points"]
    summaries: dict[str, RunSummary | None] = {}
    for entry in entries:
        run_dir = folder.root / entry["run_dir"]
        summaries[entry["name"]] = summarize(run_dir, notify) if _is_run(run_dir) else None
    axes = list(manifest.get("axes", {}))
    rows = []
    for entry in entries:
        baseline = _baseline_name(manifest, entry)
        base = summaries.get(baseline) if baseline else None
        row = _row(entry["name"], summaries[entry["name"]], base)
        rows.append({**{axis: entry["labels"].get(axis) for axis in axes}, **row})
    note = ""
    if manifest.get("baseline"):
        shown = ", ".join(f"{k} = {v}" for k, v in manifest["baseline"].items())
        note = f"Δ is measured against the point with {shown} and the same other axis values."
    return Results(_columns(rows, axes), rows, note)


def _text(column: str, value: Any) -> str:
    if value is None:
        return "—"
    if column == "peak_memory_bytes":
        return f"{value / 2**30:.2f} GiB"
    if column == "tokens_per_s":
        return f"{value:,.0f}"
    if column == "delta_final_val_loss":
        return f"{value:+.4f}"
    if isinstance(value, float):
        return f"{value:.4f}" if column.endswith(("loss", "ppl")) or column.startswith("lm_eval.") else f"{value:.3g}"
    if isinstance(value, int) and column == "tokens":
        return f"{value:,}"
    return str(value)


def _header(column: str) -> str:
    return HEADERS.get(column, column)


def as_table(results: Results, title: str = "Results") -> Table:
    table = Table(title=title, caption=results.baseline_note or None)
    for column in results.columns:
        table.add_column(_header(column), justify="right" if column in (*MEASURED, *ESTIMATED) else "left")
    for row in results.rows:
        table.add_row(*(_text(column, row.get(column)) for column in results.columns))
    return table


def as_markdown(results: Results) -> str:
    def cells(items: Sequence[str]) -> str:
        return "| " + " | ".join(item.replace("|", "\\|") for item in items) + " |"

    lines = [cells([_header(c) for c in results.columns]), cells(["---"] * len(results.columns))]
    lines += [cells([_text(c, row.get(c)) for c in results.columns]) for row in results.rows]
    if results.baseline_note:
        lines += ["", results.baseline_note]
    return "\n".join(lines) + "\n"


def as_csv(results: Results) -> str:
    """Raw values (no units, no rounding) under the column keys; unknown values are empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=results.columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in results.rows:
        writer.writerow({column: "" if row.get(column) is None else row[column] for column in results.columns})
    return out.getvalue()


def as_json(results: Results) -> str:
    rows = [{column: row.get(column) for column in results.columns} for row in results.rows]
    return json.dumps({"columns": results.columns, "rows": rows, "note": results.baseline_note}, indent=1) + "\n"


def render(results: Results, fmt: Format) -> str:
    """The text of ``md``, ``csv`` or ``json`` (``table`` is printed through :func:`as_table`)."""
    exporters = {"md": as_markdown, "csv": as_csv, "json": as_json}
    return exporters[fmt](results)


def write_csv(results: Results, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(as_csv(results), encoding="utf-8")
    temporary.replace(path)
    return path
