"""``newcompute compare``: numbers from summary.json, or from metrics.jsonl for an unfinished run, and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.train.compare import comparison_table, summarize
from newcompute.errors import ConfigError


def _write_run(folder: Path, records: list[dict], summary: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _train(step: int, loss: float, speed: float) -> dict:
    return {"kind": "train", "step": step, "loss": loss, "tokens_per_s": speed}


def _eval(step: int, loss: float) -> dict:
    return {"kind": "eval", "step": step, "val_loss": loss}


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    finished = _write_run(
        tmp_path / "optical",
        [_train(1, 5.0, 100.0), _train(2, 4.0, 400.0), _eval(2, 4.5)],
        {
            "paradigms": ["optical"],
            "steps": 2,
            "final_val_loss": 4.5,
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


def test_summaries(two_runs: tuple[Path, Path]) -> None:
    finished, unfinished = (summarize(p) for p in two_runs)
    assert (finished.final_val_loss, finished.tokens_per_s, finished.peak_memory_bytes) == (4.5, 400.0, 3 * 2**30)
    assert finished.finished and not unfinished.finished
    # Unfinished: last evaluation 4.1, best 4.1, throughput from steps after the first: harmonic mean of
    # 100 and 300 tok/s = 2 / (1/100 + 1/300) = 150 (the same tokens each step, so total tokens / total time).
    assert (unfinished.steps, unfinished.final_val_loss, unfinished.best_val_loss) == (3, 4.1, 4.1)
    assert unfinished.tokens_per_s == pytest.approx(150.0)
    assert unfinished.val_curve == [(1, 4.8), (3, 4.1)]
    assert unfinished.peak_memory_bytes is None


def test_table_rows(two_runs: tuple[Path, Path]) -> None:
    table = comparison_table([summarize(p) for p in two_runs])
    rows = list(zip(*(column.cells for column in table.columns), strict=True))
    assert rows == [
        ("optical", "optical", "2", "4.5000", "4.5000", "400", "3.00 GiB"),
        ("baseline (unfinished)", "—", "3", "4.1000", "4.1000", "150", "—"),
    ]


def test_cli_prints_the_table_and_writes_a_png(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
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
