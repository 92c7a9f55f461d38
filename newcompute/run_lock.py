"""One writer per run folder.

Two trainings into one folder would mix one run's model with the other's
metrics; ``--overwrite`` or ``--resume`` on a live run would delete its files
or duplicate its metrics. Every command that writes a run folder (train,
``--resume``, ``--overwrite``, ``transform --save``) first takes
``RUN/.newcompute.lock`` and holds it until it is done; a second writer is
refused at once with exit 2, naming the holder from ``RUN/.newcompute.lock.json``
(pid, host, since when, command).

The lock is ``filelock``'s ``FileLock``: on Linux and macOS a kernel ``flock``,
which the kernel drops when its process dies, so a run killed with SIGKILL
never leaves a lock that blocks the next one. What such a run does leave is
its holder record (a normal release deletes it); the next writer finds it,
checks whether that pid is still alive on this host, and says it took over
from a run that stopped without releasing.

In a multi-process (accelerate) run only the main process holds the lock;
the others learn its answer from it, so every process refuses together.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from newcompute.errors import ConfigError

LOCK_FILE = ".newcompute.lock"
HOLDER_FILE = ".newcompute.lock.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when}: {holder.get('command', '?')})"


def _read_holder(run_dir: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads((run_dir / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _unwritable(run_dir: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"Cannot write to the output folder {run_dir}: {exc.strerror or exc}. Nothing was trained or written; "
        "choose another output folder (--output-dir) or make this one writable."
    )


class RunLock:
    """The lock on one run folder; ``acquire`` refuses with :class:`~newcompute.ConfigError` when it is held."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock: FileLock | None = None

    def acquire(self, notify: Callable[[str], None] = print) -> None:
        """Take the lock, or refuse; also the check that the folder can be written, before any work starts."""
        lock = FileLock(str(self.run_dir / LOCK_FILE), timeout=0)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            holder = _read_holder(self.run_dir)
            who = _holder_text(holder) if holder else "another process that has not recorded itself yet"
            raise ConfigError(
                f"{self.run_dir} is in use by another newcompute command: {who}. One run writes a folder at a "
                "time (two would mix their models and metrics): wait for it to finish or stop it, or use another "
                "output folder."
            ) from None
        except OSError as exc:
            raise _unwritable(self.run_dir, exc) from None
        self._lock = lock
        stale = _read_holder(self.run_dir)
        if stale is not None:
            here = stale.get("host") == socket.gethostname()
            pid = stale.get("pid")
            state = (
                "which is no longer running"
                if here and isinstance(pid, int) and not _alive(pid)
                else "which no longer holds the lock"
            )
            notify(
                f"Took over the lock of {self.run_dir}: it was left by {_holder_text(stale)}, {state} "
                "(stopped without releasing it, e.g. killed)."
            )
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": _command()}
        temporary = self.run_dir / (HOLDER_FILE + ".tmp")
        try:
            temporary.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temporary, self.run_dir / HOLDER_FILE)
        except OSError as exc:
            self.release()
            raise _unwritable(self.run_dir, exc) from None

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # a folder made read-only meanwhile: the record stays, and the next writer reports it as left over
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _command() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return " ".join([name, *sys.argv[1:]])[:200]


def check_free(run_dir: Path, notify: Callable[[str], None] = print) -> None:
    """Refuse now if ``run_dir`` is held by another writer (the check before ``accelerate launch``)."""
    lock = RunLock(run_dir)
    lock.acquire(notify)
    lock.release()
