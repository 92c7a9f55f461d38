"""What a run leaves behind to be read later: ``metrics.jsonl`` and ``summary.json``.

``metrics.jsonl`` is written on every run whatever ``--report-to`` says:
one JSON object per line, ``{"kind": "train", "step", "loss", "lr", …}`` or
``{"kind": "eval", "step", "val_loss", "val_ppl", …}``, flushed as it is
written so a killed run keeps its curve. A resumed run first drops the
lines after its checkpoint, so the file reads as one uninterrupted run.
A run killed in the middle of a write leaves a last line without its
newline: readers skip that torn line and say so; a broken line anywhere else
is an error naming the file and line.
``summary.json`` holds the numbers ``newcompute compare`` tabulates.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import torch

from newcompute import run_files
from newcompute.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def _record(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ConfigError(
            f"{path} line {number} is not a JSON record ({exc}): the file was edited or damaged. "
            "Delete that line (or the file) and run the command again."
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int) or "kind" not in record:
        raise ConfigError(f"{path} line {number} is not a newcompute metrics record (it needs 'kind' and 'step').")
    return record


def read_metrics(run_dir: Path, on_torn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a torn last line is left out and reported to ``on_torn``."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    *lines, tail = path.read_bytes().split(b"\n")
    if tail.strip() and on_torn is not None:
        on_torn(
            f"{path}: skipped its last line, cut off by a run stopped in the middle of writing it "
            f"({len(tail)} bytes without a newline)."
        )
    return [_record(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]


def truncate_metrics(run_dir: Path, step: int, on_torn: Callable[[str], None] | None = None) -> None:
    """Keep only the records up to ``step`` (the resumed checkpoint), rewriting the file atomically."""
    kept = [r for r in read_metrics(run_dir, on_torn) if r["step"] <= step]
    run_files.write_text(run_dir, METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsLog:
    """Appends records to ``metrics.jsonl`` (main process only; the others get a closed log).

    Safe to share between threads: the telemetry writer appends a measured
    step's records while the training thread appends its own, and a lock
    keeps every line whole (a text file's ``write`` may split one line into
    several system writes).
    """

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        if enabled:
            run_files.register(run_dir, METRICS_FILE)
        self._file: IO[str] | None = (run_dir / METRICS_FILE).open("a", encoding="utf-8") if enabled else None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(record) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def peak_memory() -> tuple[int, str]:
    """The run's peak memory in bytes and what was measured (GPU allocations, else process RSS)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated()), "GPU memory allocated by torch"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process resident memory (RSS)"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    run_files.write_text(run_dir, SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}): the file was edited or damaged. Delete it to use the "
                          "metrics alone.") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{path} is not a newcompute summary (a JSON object).")
    return summary
