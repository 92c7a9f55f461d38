"""A run folder: a user's files in it are never lost, and one command at a time writes it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from pathlib import Path

import pytest
from test_train_paradigms import quiet, tiny_run
from typer.testing import CliRunner

from newcompute import run_files
from newcompute.cli.app import build_app
from newcompute.errors import ConfigError
from newcompute.plugins import Registry
from newcompute.run_lock import RunLock
from newcompute.train import train
from newcompute.train.checkpoint import complete_checkpoints

USER_FILES = {"config.json": '{"mine": true}', "tokenizer.json": "{}", "checkpoints/old.ckpt": "old weights"}


def _put(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _unchanged(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / name).read_text() == text for name, text in files.items())


def _invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args), catch_exceptions=False)


def test_a_folder_of_someone_elses_files_is_refused_with_or_without_overwrite(tmp_path: Path) -> None:
    _put(tmp_path, USER_FILES)
    for overwrite in (False, True):
        with pytest.raises(ConfigError) as caught:
            train(tiny_run(tmp_path, steps=1), Registry(), console=quiet(), overwrite=overwrite)
        assert "is not a newcompute run folder" in str(caught.value)
        assert "checkpoints/old.ckpt, config.json, tokenizer.json" in str(caught.value)
        assert _unchanged(tmp_path, USER_FILES)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_overwrite_deletes_only_what_newcompute_wrote(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_run(run_dir, steps=2, save_every=1, keep_checkpoints=1), Registry(), console=quiet())
    first_summary = (run_dir / "summary.json").read_text()
    mine = {"checkpoints/old.ckpt": "old weights", "notes.txt": "my notes", "adapter-notes/a.txt": "x"}
    _put(run_dir, mine)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_run(run_dir, steps=2), Registry(), console=quiet())

    console = quiet()
    train(tiny_run(run_dir, steps=3, save_every=100, seed=1), Registry(), console=console, overwrite=True)
    assert _unchanged(run_dir, mine)
    assert "keeps adapter-notes/a.txt, checkpoints/old.ckpt, notes.txt, which newcompute did not write" in " ".join(
        console.file.getvalue().split()
    )
    assert [p.name for p in complete_checkpoints(run_dir)] == ["step-00000003"]
    assert (run_dir / "summary.json").read_text() != first_summary
    assert run_files.foreign(run_dir) == sorted(mine)


def test_transform_save_keeps_a_trained_run_unless_asked(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_run(run_dir, steps=1), Registry(), console=quiet())
    weights = (run_dir / "model.safetensors").read_bytes()
    base = ["transform", "--model", "tiny", "--init", "scratch", "--set", "train.seed=5", "--save"]
    refused = _invoke(*base, str(run_dir))
    assert refused.exit_code == 2 and "holds a trained run" in " ".join(refused.output.split())
    assert (run_dir / "model.safetensors").read_bytes() == weights

    replaced = _invoke(*base, str(run_dir), "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (run_dir / "model.safetensors").read_bytes() != weights
    for gone in ("summary.json", "metrics.jsonl", "checkpoints"):
        assert not (run_dir / gone).exists()

    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "config.json").write_text("{}")
    into_theirs = _invoke(*base, str(tmp_path / "theirs"), "--overwrite")
    assert into_theirs.exit_code == 2 and "did not write (config.json)" in " ".join(into_theirs.output.split())
    assert (tmp_path / "theirs" / "config.json").read_text() == "{}"


def test_a_second_writer_is_refused_while_a_run_trains(tmp_path: Path) -> None:
    refusals: list[str] = []

    def second_writer(step: int, loss: float) -> None:
        if step == 1:
            for flags in ({}, {"overwrite": True}, {"resume": True}):
                with pytest.raises(ConfigError) as caught:
                    train(tiny_run(tmp_path, steps=2), Registry(), console=quiet(), **flags)
                refusals.append(str(caught.value))

    result = train(tiny_run(tmp_path, steps=2), Registry(), console=quiet(), on_step=second_writer)
    assert result.status == "finished" and len(refusals) == 3
    holder = f"is in use by another newcompute command: pid {os.getpid()} on host {socket.gethostname()} (since "
    assert all(holder in text for text in refusals)
    assert sorted(r["step"] for r in _train_records(tmp_path)) == [1, 2]


def _train_records(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in line]


def _hold(run_dir: Path, ready) -> None:  # type: ignore[no-untyped-def]
    lock = RunLock(run_dir)
    lock.acquire()
    ready.set()
    signal.pause()
    lock.release()


def test_another_process_holding_the_lock_is_named_and_its_stale_lock_taken_over(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(tmp_path, ready))
    holder.start()
    try:
        assert ready.wait(30)
        refused = _invoke("train", "--model", "tiny", "--init", "scratch", "--steps", "1", "-o", str(tmp_path))
        assert refused.exit_code == 2
        assert f"is in use by another newcompute command: pid {holder.pid} on host" in " ".join(refused.output.split())
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    notes: list[str] = []
    lock = RunLock(tmp_path)
    lock.acquire(notes.append)
    lock.release()
    assert len(notes) == 1 and f"left by pid {holder.pid} on host" in notes[0]
    assert "which is no longer running" in notes[0]


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.access(read_only, os.W_OK):
            targets = [Path("/proc/newcompute-run")]  # root writes anywhere but in a kernel filesystem
        else:
            targets = [read_only, Path("/proc/newcompute-run")]
        for target in targets:
            result = _invoke("train", "--model", "tiny", "--init", "scratch", "--steps", "1", "-o", str(target))
            assert result.exit_code == 2, result.output
            assert f"Cannot write to the output folder {target}" in " ".join(result.output.split())
            assert "Step" not in result.output
    finally:
        read_only.chmod(0o755)


def test_the_manifest_survives_a_torn_line_and_refuses_to_claim_a_users_file(tmp_path: Path) -> None:
    run_files.register(tmp_path, "a.txt", "sub/b")
    with open(tmp_path / run_files.MANIFEST, "a") as manifest:
        manifest.write("c.tx")  # a write cut off by a kill
    assert run_files.registered(tmp_path) == {"a.txt", "sub/b"}
    (tmp_path / "c.txt").write_text("theirs")
    with pytest.raises(ConfigError, match="holds c.txt, which newcompute did not write"):
        run_files.register(tmp_path, "c.txt")
    (tmp_path / "sub" / "b").mkdir(parents=True)
    (tmp_path / "sub" / "b" / "x").write_text("ours")
    (tmp_path / "sub" / "mine").write_text("theirs")
    assert run_files.foreign(tmp_path) == ["c.txt", "sub/mine"]
    run_files.remove_owned(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [run_files.MANIFEST, "c.txt", "mine"]
    assert run_files.registered(tmp_path) == set()
