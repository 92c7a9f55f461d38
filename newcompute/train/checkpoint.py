"""Checkpoints that are either complete or absent, never half-written.

A checkpoint is written into ``RUN/checkpoints/.tmp-step-N``, flushed to
disk, then renamed to ``step-N`` in one atomic ``rename``. Only folders
named ``step-*`` count, so a process killed mid-write leaves the previous
checkpoint as the newest one and a stray temporary folder that the next
start removes. Older checkpoints are pruned only after the new one is in
place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_COMPLETE = re.compile(r"^step-(\d+)$")
_TEMPORARY_PREFIX = ".tmp-"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _COMPLETE.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def remove_temporary(run_dir: Path) -> None:
    """Delete what an interrupted write left behind."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for path in root.glob(_TEMPORARY_PREFIX + "*"):
            shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flush_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(folder)


def begin(run_dir: Path, step: int) -> Path:
    """Create an empty temporary folder for the checkpoint of ``step`` (main process only)."""
    temporary = checkpoint_dir(run_dir) / f"{_TEMPORARY_PREFIX}{step_name(step)}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def commit(temporary: Path, keep: int) -> Path:
    """Flush ``temporary`` to disk, rename it into place, then prune to the newest ``keep`` (main only)."""
    _flush_tree(temporary)
    final = temporary.with_name(temporary.name.removeprefix(_TEMPORARY_PREFIX))
    if final.exists():
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync(final.parent)
    for old in complete_checkpoints(final.parent.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_checkpoint(
    run_dir: Path,
    step: int,
    keep: int,
    write: Callable[[Path], None],
    is_main: bool = True,
    wait: Callable[[], None] = lambda: None,
) -> Path:
    """Write a checkpoint with ``write(folder)`` (called on every process) atomically."""
    temporary = checkpoint_dir(run_dir) / f"{_TEMPORARY_PREFIX}{step_name(step)}"
    if is_main:
        begin(run_dir, step)
    wait()
    write(temporary)
    wait()
    final = commit(temporary, keep) if is_main else temporary.with_name(step_name(step))
    wait()
    return final


def write_state(folder: Path, state: dict[str, Any]) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
