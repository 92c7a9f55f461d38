"""The run folder: where a run writes, and how a finished run is loaded back.

``RUN/`` holds the final model as ``save_pretrained`` writes it, the
tokenizer, ``newcompute.toml`` (model, paradigms and their validated
configs, and the resolved training settings), ``metrics.jsonl``,
``summary.json``, ``checkpoints/step-N/`` and, for LoRA runs, the adapters
in ``adapter/``. Which of its files newcompute wrote is recorded in it
(:mod:`newcompute.run_files`); one command at a time writes it
(:mod:`newcompute.run_lock`).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from newcompute import run_files
from newcompute.config import RunConfig
from newcompute.errors import ConfigError
from newcompute.plugins import Registry
from newcompute.record import load, read_record, save_transformed
from newcompute.run_lock import RunLock
from newcompute.train.checkpoint import complete_checkpoints
from newcompute.train.metrics import METRICS_FILE

RUNS_ROOT = Path("runs")


def default_run_dir(run: RunConfig, paradigms: list[str]) -> Path:
    """``runs/MODEL[-PARADIGM…]``, with the model's name made safe for a folder."""
    local = Path(run.model.name).expanduser()
    name = local.resolve().name if local.exists() else run.model.name
    model = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "model"
    return RUNS_ROOT / "-".join([model, *paradigms])


def is_run_dir(path: Path) -> bool:
    return (path / "newcompute.toml").is_file()


def load_run(
    folder: Path, registry: Registry | None = None, trust_remote_code: bool = False
) -> tuple[nn.Module, PreTrainedTokenizerBase, RunConfig]:
    """A saved run's model exactly as trained (paradigms, weights, paradigm state, LoRA adapters)."""
    model, tokenizer = load(folder, registry=registry, trust_remote_code=trust_remote_code)
    return model, tokenizer, read_record(folder)


def save_transform(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, run: RunConfig, folder: Path, overwrite: bool
) -> None:
    """``transform --save``: a folder of a trained run is replaced only with ``overwrite``, whole.

    Writing a transformed model over a trained run's weights would leave its
    summary, metrics and checkpoints describing a model that is no longer
    there; an earlier ``transform --save`` is simply replaced.
    """
    with RunLock(folder):
        theirs = run_files.foreign(folder)
        if theirs and not run_files.holds_run(folder):
            raise ConfigError(
                f"--save {folder}: the folder holds files newcompute did not write ({run_files.describe(theirs)}), "
                "and newcompute never writes over them. Choose an empty or new folder."
            )
        if not overwrite and ((folder / METRICS_FILE).exists() or complete_checkpoints(folder)):
            raise ConfigError(
                f"--save {folder}: the folder holds a trained run; saving over it would replace its weights while "
                "its summary, metrics and checkpoints still describe the trained model. Pass --overwrite to "
                "replace the whole run, or save to another folder."
            )
        run_files.remove_owned(folder)
        save_transformed(model, tokenizer, run, folder)
