"""Checkpoints are atomic: a write that dies half-way leaves the previous checkpoint as the newest, loadable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_train_paradigms import make_registry, quiet, tiny_run

from newcompute.train import checkpoint, train


def _write_files(names: list[str]):
    def write(folder: Path) -> None:
        for name in names:
            (folder / name).write_text(name)

    return write


def test_write_commits_by_rename_and_prunes_to_keep(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        checkpoint.write_checkpoint(tmp_path, step, keep=2, write=_write_files(["a", "b"]))
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-00000004", "step-00000006"]
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000006"
    assert (tmp_path / "checkpoints" / "step-00000006" / "b").read_text() == "b"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_a_failed_write_leaves_the_previous_checkpoint_newest(tmp_path: Path) -> None:
    checkpoint.write_checkpoint(tmp_path, 2, keep=1, write=_write_files(["model"]))

    def dies_half_way(folder: Path) -> None:
        (folder / "model").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_checkpoint(tmp_path, 4, keep=1, write=dies_half_way)
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000002"
    assert (tmp_path / "checkpoints" / "step-00000002" / "model").read_text() == "model"
    checkpoint.remove_temporary(tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000002"]


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from newcompute.train import checkpoint, train
from test_train_paradigms import make_registry, quiet, tiny_run

flush = checkpoint._flush_tree
calls = []

def flush_then_die(folder):
    calls.append(folder)
    if len(calls) == 2:  # the second checkpoint: files written, not yet renamed into place
        os.kill(os.getpid(), signal.SIGKILL)
    flush(folder)

checkpoint._flush_tree = flush_then_die
train(tiny_run(Path({run_dir!r}), {{"int8ish": {{}}}}, steps=6, save_every=2), make_registry(), console=quiet())
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), run_dir=str(run_dir))
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [".tmp-step-00000004", "step-00000002"]
    assert (root / ".tmp-step-00000004" / "model.safetensors").is_file()

    registry = make_registry()
    resumed = train(tiny_run(run_dir, {"int8ish": {}}, steps=6, save_every=2), registry, console=quiet(), resume=True)
    assert sorted(resumed.losses) == [3, 4, 5, 6]
    assert not list(root.glob(".tmp-*"))
    straight = train(tiny_run(tmp_path / "straight", {"int8ish": {}}, steps=6, save_every=2), registry, console=quiet())
    assert {s: straight.losses[s] for s in (3, 4, 5, 6)} == resumed.losses
