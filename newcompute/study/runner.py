"""Running a sweep's points: skip the finished, resume the interrupted, one process or several at a time.

What to do with a point is read from its run folder, so a sweep that was
killed (or a SLURM job that ran out of time) is continued by running the
same command again: a point with ``summary.json`` finished and is skipped;
one with a checkpoint resumes from it (``--resume``, which repeats the
uninterrupted run's losses); one that stopped before its first checkpoint
starts again (``--overwrite`` removes only what newcompute wrote); a point
whose folder another process holds is left to it.

With ``jobs == 1`` the points run in this process, one after another. With
more, each runs as ``python -m newcompute train --config SWEEP/configs/NAME.toml``
with its output in ``SWEEP/logs/NAME.log``; where there are GPUs, each
subprocess sees exactly one (``CUDA_VISIBLE_DEVICES``), so ``jobs`` may not
exceed them. ``shard`` ``(i, n)`` keeps the points whose grid index is
``i`` modulo ``n``, so ``n`` machines (a SLURM array) split one grid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from newcompute import run_files
from newcompute.errors import ConfigError, RunError
from newcompute.run_lock import check_free
from newcompute.study.folder import SweepFolder
from newcompute.study.grid import Point
from newcompute.train.checkpoint import complete_checkpoints
from newcompute.train.metrics import SUMMARY_FILE

Action = Literal["skip", "resume", "restart", "start"]
Outcome = Literal["finished", "skipped", "interrupted", "failed", "busy"]
INTERRUPTED_EXIT = 130
POLL_S = 0.2


@dataclass(frozen=True)
class PointResult:
    point: str
    outcome: Outcome
    detail: str = ""


def action_for(folder: SweepFolder, point: str) -> Action:
    """What the run folder says to do with the point."""
    run_dir = folder.run_dir(point)
    if (run_dir / SUMMARY_FILE).is_file():
        return "skip"
    if complete_checkpoints(run_dir):
        return "resume"
    return "restart" if run_files.holds_run(run_dir) else "start"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with ``0 <= i < n``: the part of the grid this machine runs."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(
            f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/4 on the first of four machines "
            "(--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT in a SLURM array numbered from 0)."
        )
    return i, n


def shard_points(points: Sequence[Point], shard: tuple[int, int] | None) -> list[Point]:
    if shard is None:
        return list(points)
    index, count = shard
    return [point for number, point in enumerate(points) if number % count == index]


def visible_gpus() -> list[str]:
    """The GPUs the points may use: ``CUDA_VISIBLE_DEVICES`` as given, else every CUDA device torch sees."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [device.strip() for device in given.split(",") if device.strip() and device.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def _busy(folder: SweepFolder, point: str) -> str | None:
    """Why another process holds the point's folder, or None when it is free."""
    run_dir = folder.run_dir(point)
    if not run_dir.is_dir():
        return None
    try:
        check_free(run_dir, notify=lambda _: None)
    except ConfigError as exc:
        return str(exc)
    return None


Notify = Callable[[str], None]
RunInProcess = Callable[[Point, Action], Outcome]
"""Trains one point here and says how it ended (``finished`` or ``interrupted``); raises RunError on failure."""


def _next_action(
    folder: SweepFolder, point: Point, notify: Notify, prefix: str = ""
) -> tuple[Action, PointResult | None]:
    """What to do with ``point``, and its result already when there is nothing to run (finished, or held)."""
    action = action_for(folder, point.name)
    if action == "skip":
        return action, PointResult(point.name, "skipped", "finished before")
    held = _busy(folder, point.name)
    if held:
        notify(f"{prefix}{point.name}: left to the process that holds it. {held}")
        return action, PointResult(point.name, "busy", held)
    return action, None


def run_in_process(
    folder: SweepFolder, points: Sequence[Point], train_point: RunInProcess, notify: Notify
) -> list[PointResult]:
    """The points one after another in this process; Ctrl-C stops the running one (checkpointed) and the sweep."""
    results: list[PointResult] = []
    for number, point in enumerate(points, 1):
        action, settled = _next_action(folder, point, notify, f"[{number}/{len(points)}] ")
        if settled is not None:
            results.append(settled)
            continue
        notify(f"[{number}/{len(points)}] {point.name}: {_verb(action)}")
        try:
            outcome = train_point(point, action)
        except RunError as exc:
            notify(f"{point.name} failed: {exc}")
            results.append(PointResult(point.name, "failed", str(exc)))
            continue
        results.append(PointResult(point.name, outcome))
        if outcome == "interrupted":
            break
    return results


def _verb(action: Action) -> str:
    return {
        "start": "starting",
        "resume": "resuming from its newest checkpoint",
        "restart": "starting again (it stopped before its first checkpoint)",
        "skip": "finished before",
    }[action]


def train_command(folder: SweepFolder, point: str, action: Action) -> list[str]:
    command = [sys.executable, "-m", "newcompute", "train", "--config", str(folder.config(point))]
    return command + {"resume": ["--resume"], "restart": ["--overwrite"]}.get(action, [])


@contextmanager
def _deferred_ctrl_c(notify: Notify) -> Iterator[list[bool]]:
    """Ctrl-C stops launching points; the running ones (same process group) save a checkpoint and exit."""
    stopped = [False]

    def handle(signum: int, frame: object) -> None:
        if not stopped[0]:
            notify("Ctrl-C: no new points are started; the running ones save a checkpoint and stop.")
        stopped[0] = True

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


def _child_env(gpu: str | None, jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))  # CPU points share the cores
    return env


def run_in_subprocesses(
    folder: SweepFolder, points: Sequence[Point], jobs: int, gpus: list[str], notify: Notify
) -> list[PointResult]:
    if gpus and jobs > len(gpus):
        raise ConfigError(
            f"--jobs {jobs}: each point runs on a GPU of its own, and {len(gpus)} are visible "
            f"({', '.join(gpus)}). Pass --jobs {len(gpus)} or fewer (CUDA_VISIBLE_DEVICES= runs on the CPU)."
        )
    waiting = list(points)
    running: dict[str, tuple[subprocess.Popen[bytes], str | None]] = {}
    results: list[PointResult] = []
    free = list(gpus)
    with _deferred_ctrl_c(notify) as stopped:
        while waiting or running:
            while waiting and len(running) < jobs and not stopped[0]:
                point = waiting.pop(0)
                action, settled = _next_action(folder, point, notify)
                if settled is not None:
                    results.append(settled)
                    continue
                gpu = free.pop(0) if gpus else None
                log = folder.log(point.name)
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "ab") as output:
                    process = subprocess.Popen(
                        train_command(folder, point.name, action),
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        env=_child_env(gpu, jobs),
                    )
                running[point.name] = (process, gpu)
                where = f" on GPU {gpu}" if gpu is not None else ""
                notify(f"{point.name}: {_verb(action)}{where} (log: {log})")
            if stopped[0]:
                waiting.clear()
            for name, (process, gpu) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[name]
                if gpu is not None:
                    free.append(gpu)
                results.append(_ended(folder, name, code, notify))
            time.sleep(POLL_S if running else 0)
    return results


def _ended(folder: SweepFolder, name: str, code: int, notify: Notify) -> PointResult:
    if code == 0:
        notify(f"{name}: finished")
        return PointResult(name, "finished")
    if code == INTERRUPTED_EXIT:
        notify(f"{name}: interrupted; run the sweep again to resume it")
        return PointResult(name, "interrupted")
    tail = folder.log(name).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
    notify(f"{name}: failed with exit code {code}; see {folder.log(name)}")
    return PointResult(name, "failed", " ".join(tail))
