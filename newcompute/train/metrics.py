"""What a run leaves behind to be read later: ``metrics.jsonl`` and ``summary.json``.

``metrics.jsonl`` is written on every run whatever ``--report-to`` says:
one JSON object per line, ``{"kind": "train", "step", "loss", "lr", …}`` or
``{"kind": "eval", "step", "val_loss", "val_ppl", …}``, flushed as it is
written so a killed run keeps its curve. A resumed run first drops the
lines after its checkpoint, so the file reads as one uninterrupted run.
``summary.json`` holds the numbers ``newcompute compare`` tabulates.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import IO, Any

import torch

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only the records up to ``step`` (the resumed checkpoint)."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


class MetricsLog:
    """Appends records to ``metrics.jsonl`` (main process only; the others get a closed log)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self._file: IO[str] | None = (run_dir / METRICS_FILE).open("a", encoding="utf-8") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
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
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
