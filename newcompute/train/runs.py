"""The run folder: where a run writes, and how a finished run is loaded back.

``RUN/`` holds the final model as ``save_pretrained`` writes it, the
tokenizer, ``newcompute.toml`` (model, paradigms and their validated
configs, and the resolved training settings), ``metrics.jsonl``,
``summary.json``, ``checkpoints/step-N/`` and, for LoRA runs, the adapters
in ``adapter/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from newcompute.config import RunConfig
from newcompute.plugins import Registry
from newcompute.record import load, read_record

RUNS_ROOT = Path("runs")


def default_run_dir(run: RunConfig, paradigms: list[str]) -> Path:
    """``runs/MODEL[-PARADIGM…]``, with the model's name made safe for a folder."""
    local = Path(run.model.name).expanduser()
    name = local.resolve().name if local.exists() else run.model.name
    model = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "model"
    return RUNS_ROOT / "-".join([model, *paradigms])


def is_run_dir(path: Path) -> bool:
    return (path / "newcompute.toml").is_file()


def load_run(folder: Path, registry: Registry | None = None) -> tuple[nn.Module, PreTrainedTokenizerBase, RunConfig]:
    """A saved run's model exactly as trained (paradigms, weights, paradigm state, LoRA adapters)."""
    model, tokenizer = load(folder, registry=registry)
    return model, tokenizer, read_record(folder)
