"""A forced, far too high learning rate stops the run with advice and keeps the last good checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_paradigms import quiet, tiny_run

from newcompute.errors import RunError
from newcompute.models import load_model
from newcompute.plugins import Registry
from newcompute.train import train
from newcompute.train.checkpoint import complete_checkpoints, read_state


def test_huge_lr_trips_the_guard_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, steps=40, lr=10.0, warmup_steps=100, save_every=2, divergence_patience=3)
    losses: dict[int, float] = {}
    with pytest.raises(RunError) as caught:
        train(run, Registry(), console=quiet(), on_step=lambda step, loss: losses.__setitem__(step, loss))
    message = str(caught.value)
    assert "diverged" in message and "--lr 1" in message and "too high" in message

    kept = complete_checkpoints(tmp_path)
    assert kept, "a checkpoint from before the divergence must remain"
    last = kept[-1]
    assert str(last) in message
    saved_step = read_state(last)["step"]
    best = min(losses[s] for s in losses if s <= saved_step)
    # Every loss up to the kept checkpoint was under the guard line; the run then went above it.
    assert all(losses[s] <= 2 * min(losses[t] for t in losses if t <= s) for s in losses if s <= saved_step)
    assert max(losses.values()) > 2 * best
    # The run stopped early and wrote no final model.
    assert max(losses) < 40 and not (tmp_path / "config.json").exists()

    fresh = load_model(run.model).model
    fresh.load_state_dict(load_file(last / "model.safetensors"))
    assert all(math.isfinite(p.abs().max().item()) for p in fresh.parameters())
    with torch.no_grad():
        assert math.isfinite(fresh(input_ids=torch.arange(8)[None], labels=torch.arange(8)[None]).loss.item())

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == sorted(losses)


def test_a_nan_loss_stops_at_once(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, steps=10, lr=1e30, warmup_steps=0, save_every=100)
    with pytest.raises(RunError, match=r"loss became nan at step 2"):
        train(run, Registry(), console=quiet())
