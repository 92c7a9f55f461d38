"""``newcompute sweep``: a grid becomes one run folder per point, resumable, checked before anything runs."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from tests_support import run_bounded
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.config import load_run_config
from newcompute.errors import ConfigError
from newcompute.plugins import get_registry
from newcompute.study.grid import expand, read_grid
from newcompute.study.runner import parse_shard, shard_points
from newcompute.study.sweep import run_sweep
from newcompute.train import train

BASE = """
[base.model]
name = "tiny"
init = "scratch"

[base.train]
steps = 3
batch_size = 4
micro_batch_size = 2
block_size = 32
save_every = 2
eval_every = 2
eval_batches = 1

[base.data]
max_tokens = 8192
validation_max_blocks = 4
"""


def _grid(tmp_path: Path, axes: str, extra: str = "") -> Path:
    path = tmp_path / "grid.toml"
    sweep = f'[sweep]\noutput_dir = "{tmp_path / "sweep"}"\n{extra}\n'
    path.write_text(sweep + BASE + "\n[axes]\n" + textwrap.dedent(axes))
    return path


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, " ".join(result.output.split())


def _files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a run folder with its modification time and content."""
    return {
        str(path.relative_to(run_dir)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and not path.name.startswith(".newcompute.lock")
    }


def test_points_are_named_from_their_axis_values_and_paradigm_fields_vary_only_their_paradigm(tmp_path: Path) -> None:
    axes = 'paradigms = [[], "optical"]\n"paradigm.optical.fc.q_levels" = [64, 256]\nseed = [0, 1]\n'
    grid = read_grid(_grid(tmp_path, axes))
    points = expand(grid, get_registry())
    # q_levels does not apply to the baseline, so the baseline is not repeated per q_levels value.
    assert [p.name for p in points] == [
        "paradigms-none_seed-0",
        "paradigms-none_seed-1",
        "paradigms-optical_q_levels-64_seed-0",
        "paradigms-optical_q_levels-64_seed-1",
        "paradigms-optical_q_levels-256_seed-0",
        "paradigms-optical_q_levels-256_seed-1",
    ]
    optical = points[4]
    assert optical.config["paradigm"] == {"optical": {"fc": {"q_levels": 256}}}
    assert optical.config["train"]["seed"] == 0 and points[0].config["paradigm"] == {}
    assert optical.config["train"]["output_dir"] == str(tmp_path / "sweep" / "runs" / optical.name)
    assert grid.baseline == {"paradigms": []}  # the grid has a run without paradigms: Δ is measured against it
    assert [p.name for p in shard_points(points, parse_shard("1/4"))] == [points[1].name, points[5].name]


@pytest.mark.parametrize(
    ("axes", "named"),
    [
        ('"train.stpes" = [1, 2]\n', "axis 'train.stpes' = 1: unknown key 'train.stpes'. Did you mean 'steps'?"),
        ('seed = []\n', "axis 'seed': the axis is empty"),
        ('paradigms = ["optical", "opticl"]\n', "axis 'paradigms' = opticl: Unknown paradigm 'opticl'"),
        ('paradigms = ["optical"]\n"paradigm.optical.fc.q_lvls" = [8]\n', "axis 'paradigm.optical.fc.q_lvls' = 8:"),
        ('paradigms = ["mxfp8"]\n"paradigm.optical.fc.q_levels" = [8]\n', "which no point applies"),
        ('paradigms = [["optical", "optical"]]\n', "axis 'paradigms': ['optical', 'optical'] lists 'optical' twice"),
        ('paradigms = [["optical", "mxfp8"]]\n', "point paradigms-optical+mxfp8 (paradigms = optical+mxfp8): Layer"),
        ('lr = [-1.0]\n', "axis 'lr' = -1: 'train.lr': Input should be greater than 0"),
        ('"train.output_dir" = ["a"]\n', "axis 'train.output_dir': each point's run folder is chosen by the sweep"),
    ],
)
def test_a_bad_grid_fails_with_exit_2_before_any_run_naming_the_axis(tmp_path: Path, axes: str, named: str) -> None:
    grid = _grid(tmp_path, axes)
    code, output = _invoke("sweep", str(grid))
    assert code == 2, output
    assert named in output
    assert not (tmp_path / "sweep").exists()  # nothing was written, let alone run


def test_a_sweep_writes_a_run_per_point_and_results_and_rerunning_redoes_nothing(tmp_path: Path) -> None:
    grid = _grid(tmp_path, 'paradigms = [[], "optical"]\nseed = [0, 1]\n')
    sweep = tmp_path / "sweep"
    # First only half of the grid, as one machine of two would run it (points 0 and 2 of 4).
    first = run_sweep(grid, shard=(0, 2), console=_quiet())
    done = {r.point for r in first.results if r.outcome == "finished"}
    assert done == {"paradigms-none_seed-0", "paradigms-optical_seed-0"}
    before = {name: _files(sweep / "runs" / name) for name in done}
    assert all("model.safetensors" in files and "summary.json" in files for files in before.values())
    # Then a point killed mid-run: it stopped after step 2, with its step-2 checkpoint.
    killed = "paradigms-none_seed-1"
    config = load_run_config(sweep / "configs" / f"{killed}.toml")

    def kill(step: int, loss: float) -> None:
        if step == 1:
            signal.raise_signal(signal.SIGINT)

    assert train(config, console=_quiet(), on_step=kill).status == "interrupted"
    code, output = _invoke("sweep", str(grid))
    assert code == 0, output
    assert f"{killed}: resuming from its newest checkpoint" in output
    assert "2 finished now, 2 finished before" in output
    for name, files in before.items():
        assert _files(sweep / "runs" / name) == files  # untouched: same bytes, same modification times
    resumed = [json.loads(line) for line in (sweep / "runs" / killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed if r["kind"] == "train"] == [1, 2, 3]

    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [r["run"] for r in rows] == [
        "paradigms-none_seed-0",
        "paradigms-none_seed-1",
        "paradigms-optical_seed-0",
        "paradigms-optical_seed-1",
    ]
    assert [(r["paradigms"], r["seed"], r["status"]) for r in rows][2] == ("optical", "0", "finished")
    for row in rows:
        summary = json.loads((sweep / "runs" / row["run"] / "summary.json").read_text())
        assert float(row["final_val_loss"]) == summary["final_val_loss"]
    # Δ is the optical run's final loss minus the baseline's of the same seed.
    delta = float(rows[3]["delta_final_val_loss"])
    assert delta == pytest.approx(float(rows[3]["final_val_loss"]) - float(rows[1]["final_val_loss"]))
    assert rows[1]["delta_final_val_loss"] == "0.0"
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["axes"] == {"paradigms": [[], ["optical"]], "seed": [0, 1]}
    assert [p["name"] for p in manifest["points"]] == [r["run"] for r in rows]

    code, output = _invoke("sweep", str(grid))
    assert code == 0 and "0 finished now, 4 finished before" in output


def test_a_changed_point_is_refused_and_a_foreign_folder_is_not_used(tmp_path: Path) -> None:
    grid = _grid(tmp_path, "seed = [0]\n")
    assert _invoke("sweep", str(grid), "--dry-run")[0] == 0
    relative = os.path.relpath(tmp_path / "sweep")  # the same folder spelled another way is the same sweep
    assert _invoke("sweep", str(grid), "--dry-run", "--output-dir", relative)[0] == 0
    grid.write_text(grid.read_text().replace("steps = 3", "steps = 4"))
    code, output = _invoke("sweep", str(grid), "--dry-run")
    assert code == 2 and "The settings of point(s) seed-0 differ" in output
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    code, output = _invoke("sweep", str(grid), "--dry-run", "--output-dir", str(tmp_path / "theirs"))
    assert code == 2 and "holds files but no sweep.json" in output
    assert _invoke("sweep", str(grid), "--shard", "2/2")[0] == 2


@pytest.mark.slow
def test_parallel_points_run_as_subprocesses_with_their_own_logs(tmp_path: Path) -> None:
    # One point keeps the test to one extra process (each imports torch); --jobs 2 takes the subprocess path.
    grid = _grid(tmp_path, "seed = [3]\n")
    done = run_bounded([sys.executable, "-m", "newcompute", "sweep", str(grid), "--jobs", "2"], 600)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert (sweep / "runs" / "seed-3" / "summary.json").is_file()
    assert "Done: 3 steps" in (sweep / "logs" / "seed-3.log").read_text()
    assert "seed-3: starting (log: " in " ".join(done.stdout.split())
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [(r["run"], r["status"], r["seed"]) for r in rows] == [("seed-3", "finished", "3")]


def test_jobs_beyond_the_gpus_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from newcompute.study.folder import SweepFolder
    from newcompute.study.runner import run_in_subprocesses

    with pytest.raises(ConfigError, match="--jobs 3: each point runs on a GPU of its own, and 2 are visible"):
        run_in_subprocesses(SweepFolder(tmp_path), [], 3, ["0", "1"], print)


def _fake_run(run_dir: Path, paradigms: list[str], final: float) -> None:
    """A finished run's metrics and summary, as the trainer writes them (16 tokens a step)."""
    run_dir.mkdir(parents=True)
    records = [
        {"kind": "train", "step": 1, "loss": final + 1, "tokens": 16, "tokens_per_s": 100.0},
        {"kind": "eval", "step": 1, "val_loss": final + 0.5, "final": False},
        {"kind": "train", "step": 2, "loss": final + 0.2, "tokens": 32, "tokens_per_s": 100.0},
        {"kind": "eval", "step": 2, "val_loss": final, "val_ppl": 2.0, "final": True},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"paradigms": paradigms, "steps": 2, "tokens": 32, "final_val_loss": final, "tokens_per_s": 100.0}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_results_of_a_sweep_and_the_final_loss_against_an_axis_with_seeds_as_error_bars(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from newcompute.study.plots import axis_figure
    from newcompute.study.results import sweep_rows
    from newcompute.study.sweep import plan_sweep

    grid = _grid(tmp_path, 'paradigms = [[], "optical"]\n"paradigm.optical.fc.q_levels" = [16, 256]\nseed = [0, 1]\n')
    folder, points = plan_sweep(grid, get_registry())
    finals = {
        "paradigms-none_seed-0": 3.0,
        "paradigms-none_seed-1": 3.2,
        "paradigms-optical_q_levels-16_seed-0": 4.0,
        "paradigms-optical_q_levels-16_seed-1": 5.0,
        "paradigms-optical_q_levels-256_seed-0": 3.5,
    }  # the last point has not run
    for point in points:
        if point.name in finals:
            _fake_run(folder.run_dir(point.name), list(point.paradigms), finals[point.name])
    results = sweep_rows(folder.root)
    assert results.columns[:5] == ["run", "paradigms", "paradigm.optical.fc.q_levels", "seed", "status"]
    by_name = {row["run"]: row for row in results.rows}
    assert by_name["paradigms-optical_q_levels-16_seed-1"]["delta_final_val_loss"] == pytest.approx(5.0 - 3.2)
    assert by_name["paradigms-optical_q_levels-256_seed-1"]["status"] == "not started"
    assert by_name["paradigms-none_seed-0"]["paradigm.optical.fc.q_levels"] is None  # it does not apply there

    figure = axis_figure(results, "paradigm.optical.fc.q_levels")
    axes = figure.axes[0]
    assert axes.get_xlabel() == "paradigm.optical.fc.q_levels"
    (bars,) = axes.containers  # only the optical points have a q_levels value
    line, _, (spread,) = bars
    assert list(line.get_xdata()) == [16.0, 256.0]
    assert list(line.get_ydata()) == pytest.approx([4.5, 3.5])  # mean over seeds; q_levels 256 has one seed
    low, high = spread.get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((4.5 - 0.7071068, 4.5 + 0.7071068))  # ± the sample std of 4 and 5
    plt.close(figure)

    curves, final = tmp_path / "curves.png", tmp_path / "final.png"
    code, output = _invoke(
        "results", str(folder.root), "--format", "json", "--plot", str(curves), "--axis", "seed",
        "--axis-plot", str(final),
    )
    assert code == 0, output
    assert curves.read_bytes()[:4] == final.read_bytes()[:4] == b"\x89PNG"
    code, output = _invoke("results", str(folder.root), "--axis", "bits")
    assert code == 2 and "--axis 'bits' is not an axis of the sweep" in output
    code, output = _invoke("results", str(tmp_path))
    assert code == 2 and "is not a sweep folder: it has no sweep.json" in output


def test_the_example_grid_checks_out(tmp_path: Path) -> None:
    grid = Path(__file__).parents[1] / "examples" / "configs" / "sweep.toml"
    code, output = _invoke("sweep", str(grid), "--dry-run", "--output-dir", str(tmp_path / "sweep"))
    assert code == 0, output
    assert "8 points" in output  # 2 baseline + 2 × 2 optical + 2 MXFP8
    assert "paradigms-optical_q_levels-16_seed-1: start" in output


@pytest.mark.gpu
def test_parallel_points_each_get_a_gpu_of_their_own(tmp_path: Path) -> None:
    """On a machine with two or more GPUs: two points at once, one on each GPU, each seeing only its own."""
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    grid = _grid(tmp_path, "seed = [0, 1]\n")
    done = run_bounded([sys.executable, "-m", "newcompute", "sweep", str(grid), "--jobs", "2"], 600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seed-0: starting on GPU 0" in done.stdout and "seed-1: starting on GPU 1" in done.stdout
    for name in ("seed-0", "seed-1"):
        summary = json.loads((tmp_path / "sweep" / "runs" / name / "summary.json").read_text())
        assert summary["device"] == "cuda:0"  # the one GPU its process can see
