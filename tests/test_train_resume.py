"""An interrupted run resumed from its checkpoint equals the run that was never interrupted, bit for bit (CPU)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_paradigms import make_registry, quiet, tiny_run

from newcompute.errors import ConfigError
from newcompute.train import train
from newcompute.train.checkpoint import complete_checkpoints

PARADIGMS = {"int8ish": {}, "noisy-attention": {"std": 0.05}}


def _ctrl_c_at(step: int):
    def callback(at: int, loss: float) -> None:
        if at == step:
            signal.raise_signal(signal.SIGINT)

    return callback


def test_resume_after_ctrl_c_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    registry = make_registry()
    settings = dict(steps=8, eval_every=3, save_every=100)
    full = train(tiny_run(tmp_path / "full", PARADIGMS, **settings), registry, console=quiet())

    cut = tmp_path / "cut"
    first = train(tiny_run(cut, PARADIGMS, **settings), registry, console=quiet(), on_step=_ctrl_c_at(3))
    # The flag raised after step 3 is agreed on during step 4, which completes and is saved before stopping.
    assert (first.status, first.step) == ("interrupted", 4)
    assert [p.name for p in complete_checkpoints(cut)] == ["step-00000004"]
    assert not (cut / "summary.json").exists()

    second = train(tiny_run(cut, PARADIGMS, **settings), registry, console=quiet(), resume=True)
    assert second.status == "finished"
    assert sorted(second.losses) == [5, 6, 7, 8]
    assert {**first.losses, **second.losses} == full.losses
    assert second.final == full.final

    full_weights, resumed_weights = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(cut / "model.safetensors"),
    )
    assert full_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(full_weights[k], resumed_weights[k]) for k in full_weights)
    # The paradigm's running statistic travelled through the checkpoint too.
    assert full_weights["model.layers.0.mlp.up_proj.x_absmax"].item() > 0

    full_lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    resumed_lines = (cut / "metrics.jsonl").read_text().splitlines()
    drop_speed = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in full_lines]
    assert drop_speed == [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in resumed_lines]


def test_resume_refuses_a_changed_run_and_a_missing_checkpoint(tmp_path: Path) -> None:
    registry = make_registry()
    run_dir = tmp_path / "run"
    train(tiny_run(run_dir, steps=4, save_every=2), registry, console=quiet(), on_step=_ctrl_c_at(1))
    with pytest.raises(ConfigError, match=r"train\.lr: .* in the checkpoint, 0\.5 now"):
        train(tiny_run(run_dir, steps=4, save_every=2, lr=0.5), registry, console=quiet(), resume=True)
    with pytest.raises(ConfigError, match="has no checkpoint to resume from"):
        train(tiny_run(tmp_path / "empty", steps=4), registry, console=quiet(), resume=True)
    with pytest.raises(ConfigError, match="already holds a run. Pass --resume"):
        train(tiny_run(run_dir, steps=4, save_every=2), registry, console=quiet())
