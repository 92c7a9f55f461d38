"""Checkpoints that are either complete or absent, never half-written.

A checkpoint is written into ``RUN/checkpoints/.tmp-step-N``, flushed to
disk, then renamed to ``step-N`` in one atomic ``rename``. Only folders
named ``step-*`` count, so a process killed mid-write leaves the previous
checkpoint as the newest one and a stray temporary folder that the next
start removes. Older checkpoints are pruned only after the new one is in
place.

A complete checkpoint also lists the size of every file in it
(``contents.json``), so that ``--resume`` can tell a checkpoint damaged after
it was written (a truncated copy, a disk error, a file edited by hand) from an
intact one, and fall back to the newest intact one instead of failing.
Each folder is registered in the run's manifest (:mod:`newcompute.run_files`)
before it is created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from newcompute import run_files, weight_files

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
CONTENTS_FILE = "contents.json"
STATE_KEYS = ("step", "guard", "best_val_loss", "run")
_COMPLETE = re.compile(r"^step-(\d+)$")
_TEMPORARY_PREFIX = ".tmp-"
_DAMAGED_PREFIX = "damaged-"


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


def temporary_dir(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"{_TEMPORARY_PREFIX}{step_name(step)}"


def begin(run_dir: Path, step: int) -> Path:
    """Create an empty temporary folder for the checkpoint of ``step`` (main process only)."""
    temporary = temporary_dir(run_dir, step)
    run_files.register(run_dir, temporary)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def discard(temporary: Path) -> None:
    """Drop a written checkpoint that turned out not to be worth keeping (main only)."""
    shutil.rmtree(temporary, ignore_errors=True)


def _write_contents(folder: Path) -> None:
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / CONTENTS_FILE).write_text(json.dumps(sizes, indent=1), encoding="utf-8")


def commit(temporary: Path, keep: int) -> Path:
    """Flush ``temporary`` to disk, rename it into place, then prune to the newest ``keep`` (main only)."""
    _write_contents(temporary)
    _flush_tree(temporary)
    final = temporary.with_name(temporary.name.removeprefix(_TEMPORARY_PREFIX))
    run_files.register(final.parent.parent, final)
    if final.exists():
        shutil.rmtree(final)
    os.rename(temporary, final)
    _fsync(final.parent)
    for old in complete_checkpoints(final.parent.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_pending(
    run_dir: Path,
    step: int,
    write: Callable[[Path], None],
    is_main: bool = True,
    wait: Callable[[], None] = lambda: None,
) -> Path:
    """Write a checkpoint with ``write(folder)`` (called on every process) into its temporary folder.

    It does not count as a checkpoint until :func:`commit` renames it into place.
    """
    temporary = temporary_dir(run_dir, step)
    if is_main:
        begin(run_dir, step)
    wait()
    write(temporary)
    wait()
    return temporary


def write_checkpoint(
    run_dir: Path,
    step: int,
    keep: int,
    write: Callable[[Path], None],
    is_main: bool = True,
    wait: Callable[[], None] = lambda: None,
) -> Path:
    """Write a checkpoint with ``write(folder)`` (called on every process) atomically."""
    temporary = write_pending(run_dir, step, write, is_main, wait)
    final = commit(temporary, keep) if is_main else temporary.with_name(step_name(step))
    wait()
    return final


def write_state(folder: Path, state: dict[str, Any]) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def damage(folder: Path) -> str | None:
    """What is wrong with a complete checkpoint, or None if it looks intact.

    Checks what can be checked without loading it: every file listed in
    ``contents.json`` is there with its size, the trainer state parses, every
    weights file (safetensors, torch archive) is readable.
    """
    try:
        state = read_state(folder)
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE} cannot be read ({exc})"
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        return f"{STATE_FILE} lacks some of {', '.join(STATE_KEYS)}"
    contents = folder / CONTENTS_FILE
    if contents.is_file():
        try:
            sizes = json.loads(contents.read_text(encoding="utf-8"))
        except ValueError as exc:
            return f"{CONTENTS_FILE} cannot be read ({exc})"
        for name, size in sizes.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size:,} bytes where {size:,} were written"
    for path in sorted(folder.rglob("*")):
        found = weight_files.problem(path)
        if found is not None:
            return f"{path.relative_to(folder)} is {found}"
    return None


def newest_intact(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint that is intact, and the newer ones that are damaged (with what is wrong)."""
    damaged: list[tuple[Path, str]] = []
    for folder in reversed(complete_checkpoints(run_dir)):
        problem = damage(folder)
        if problem is None:
            return folder, damaged
        damaged.append((folder, problem))
    return None, damaged


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint so it no longer counts, keeping it for a look (main only)."""
    aside = folder.with_name(_DAMAGED_PREFIX + folder.name)
    run_files.register(folder.parent.parent, aside)
    if aside.exists():
        shutil.rmtree(aside)
    os.rename(folder, aside)
    return aside
