"""``newcompute compare``: numbers from summary.json, or from metrics.jsonl for an unfinished run, exports and a PNG."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newcompute.cli import render
from newcompute.cli.app import build_app
from newcompute.errors import ConfigError
from newcompute.study.plots import curves_figure
from newcompute.study.results import as_table, run_results
from newcompute.train.compare import summarize


def _write_run(folder: Path, records: list[dict], summary: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _train(step: int, loss: float, speed: float) -> dict:
    return {"kind": "train", "step": step, "loss": loss, "tokens_per_s": speed, "tokens": 64 * step}


def _eval(step: int, loss: float, final: bool = False) -> dict:
    return {"kind": "eval", "step": step, "val_loss": loss, "val_ppl": 2.0**loss, "final": final}


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    finished = _write_run(
        tmp_path / "optical",
        [_train(1, 5.0, 100.0), _eval(1, 4.7), _train(2, 4.0, 400.0), _eval(2, 4.5, final=True)],
        {
            "paradigms": ["optical"],
            "steps": 2,
            "tokens": 128,
            "final_val_loss": 4.5,
            "final_val_ppl": 2.0**4.5,
            "best_val_loss": 4.5,
            "tokens_per_s": 400.0,
            "peak_memory_bytes": 3 * 2**30,
        },
    )
    unfinished = _write_run(
        tmp_path / "baseline",
        [_train(1, 5.0, 50.0), _eval(1, 4.8), _train(2, 4.2, 100.0), _train(3, 3.9, 300.0), _eval(3, 4.1)],
    )
    return finished, unfinished


def test_summaries_keep_the_final_full_set_evaluation_apart_from_the_periodic_ones(two_runs: tuple[Path, Path]) -> None:
    finished, unfinished = (summarize(p) for p in two_runs)
    assert (finished.final_val_loss, finished.tokens_per_s, finished.peak_memory_bytes) == (4.5, 400.0, 3 * 2**30)
    assert finished.best_periodic_val_loss == 4.7  # the final evaluation (4.5) scored the full set: not a period
    assert finished.val_curve.points == [(1, 64, 4.7)]
    assert finished.finished and not unfinished.finished
    # Unfinished: no final full-set evaluation, so no final loss; the best periodic one is 4.1. Throughput from
    # steps after the first: harmonic mean of 100 and 300 tok/s = 2 / (1/100 + 1/300) = 150 (the same tokens
    # each step, so total tokens / total time).
    assert (unfinished.steps, unfinished.final_val_loss, unfinished.best_periodic_val_loss) == (3, None, 4.1)
    assert unfinished.tokens == 3 * 64
    assert unfinished.tokens_per_s == pytest.approx(150.0)
    assert unfinished.val_curve.xy("tokens") == ([64, 192], [4.8, 4.1])
    assert unfinished.val_curve.xy("steps") == ([1, 3], [4.8, 4.1])
    assert unfinished.peak_memory_bytes is None


def test_table_rows(two_runs: tuple[Path, Path]) -> None:
    table = as_table(run_results(list(two_runs), baseline="optical"))
    rows = list(zip(*(column.cells for column in table.columns), strict=True))
    assert [column.header for column in table.columns][:6] == [
        "run", "status", "paradigms", "steps", "tokens", "final val loss (full set)"
    ]
    assert rows == [
        ("optical", "finished", "optical", "2", "128", "4.5000", f"{2**4.5:.4f}", "+0.0000", "4.7000", "400",
         "3.00 GiB"),
        ("baseline", "unfinished", "none", "3", "192", "—", "—", "—", "4.1000", "150", "—"),
    ]


def test_csv_json_and_markdown_exports(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    finished, unfinished = two_runs
    code_csv = CliRunner().invoke(
        build_app(), ["compare", str(finished), str(unfinished), "--format", "csv", "--plot", str(tmp_path / "c.png")]
    )
    assert code_csv.exit_code == 0, code_csv.output
    rows = list(csv.DictReader(io.StringIO(code_csv.stdout)))
    assert [(r["run"], r["final_val_loss"], r["best_periodic_val_loss"], r["peak_memory_bytes"]) for r in rows] == [
        ("optical", "4.5", "4.7", str(3 * 2**30)),
        ("baseline", "", "4.1", ""),
    ]
    output = tmp_path / "out" / "runs.json"
    result = CliRunner().invoke(
        build_app(),
        ["compare", str(unfinished), str(finished), "--format", "json", "--output", str(output), "--baseline",
         "baseline", "--plot", str(tmp_path / "c.png")],
    )
    assert result.exit_code == 0, result.output
    exported = json.loads(output.read_text())
    assert set(exported) == {"columns", "rows", "note"} and exported["note"] == "Δ is measured against baseline."
    assert all(list(row) == exported["columns"] for row in exported["rows"])
    baseline, optical = exported["rows"]
    assert optical["final_val_loss"] == 4.5 and isinstance(optical["tokens"], int)
    assert optical["delta_final_val_loss"] is None  # the baseline has no final evaluation to compare with
    assert baseline["final_val_loss"] is None and baseline["status"] == "unfinished"
    markdown = CliRunner().invoke(
        build_app(), ["compare", str(finished), "--format", "md", "--plot", str(tmp_path / "c.png")]
    ).stdout.splitlines()
    assert markdown[0].startswith("| run | status | paradigms |") and markdown[1].startswith("| --- |")
    assert "| 4.5000 |" in markdown[2]
    bad = CliRunner().invoke(build_app(), ["compare", str(finished), "--format", "xls"])
    assert bad.exit_code == 2 and "choose one of table, md, csv, json" in bad.output
    bad = CliRunner().invoke(build_app(), ["compare", str(finished), "--baseline", "nope"])
    assert bad.exit_code == 2 and "--baseline 'nope' is not one of the runs compared" in " ".join(bad.output.split())


def test_curves_are_drawn_against_tokens_by_default(two_runs: tuple[Path, Path]) -> None:
    import matplotlib.pyplot as plt

    runs = [summarize(p) for p in two_runs]
    for x, label, final_x in (("tokens", "tokens trained on", 128), ("steps", "optimizer step", 2)):
        figure = curves_figure(runs, x) if x == "steps" else curves_figure(runs)
        axes = figure.axes[0]
        assert axes.get_xlabel() == label
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert list(lines["baseline validation (partial)"].get_xdata()) == ([64, 192] if x == "tokens" else [1, 3])
        assert list(lines["optical final (full set)"].get_xdata()) == [final_x]
        assert "baseline final (full set)" not in lines
        plt.close(figure)


def test_cli_prints_the_table_and_writes_a_png(
    two_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(render.console, "width", 250)  # the table's eleven columns, unwrapped
    plot = tmp_path / "plots" / "curves.png"
    result = CliRunner().invoke(build_app(), ["compare", *map(str, two_runs), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "3.00 GiB" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a training run"):
        summarize(tmp_path / "empty")
    result = CliRunner().invoke(build_app(), ["compare", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "Not a folder" in result.output


def test_a_torn_last_line_is_skipped_and_a_broken_one_named(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    finished, unfinished = two_runs
    with open(unfinished / "metrics.jsonl", "a") as metrics:
        metrics.write('{"kind": "train", "step": 4, "lo')  # a kill in the middle of a write
    plot = tmp_path / "curves.png"
    result = CliRunner().invoke(build_app(), ["compare", str(finished), str(unfinished), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "metrics.jsonl:skippeditslastline,cutoffbyarunstopped" in "".join(result.output.split())
    lines = (unfinished / "metrics.jsonl").read_text().splitlines()
    (unfinished / "metrics.jsonl").write_text("\n".join([*lines[:2], "{broken", *lines[2:]]) + "\n")
    (finished / "summary.json").write_bytes(b"\xff\xfe")
    for run, named in ((unfinished, "metrics.jsonlline3isnotaJSONrecord"), (finished, "summary.jsonisnotJSON")):
        result = CliRunner().invoke(build_app(), ["compare", str(run), "--plot", str(plot)])
        assert result.exit_code == 2 and named in "".join(result.output.split()), result.output
