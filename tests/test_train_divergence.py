"""A forced, far too high learning rate stops the run with advice and keeps the last good checkpoint.

"Good" is checked against what the run measured: the loss of step k is
taken before step k's update, so the weights of checkpoint k are the ones
step k + 1 scored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from safetensors.torch import load_file
from test_train_paradigms import SgdConfig, quiet, tiny_run

from newcompute import Paradigm, ReplacedLinear, Role, hookimpl, is_linear_like
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
    # The kept weights scored under the guard line (at the step after them); the run then went above it.
    assert losses[saved_step + 1] <= 2 * best
    assert f"scored loss {losses[saved_step + 1]:.4g}" in message
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
    run = tiny_run(tmp_path, steps=10, lr=1e30, warmup_steps=0, save_every=100, eval_every=100)
    with pytest.raises(RunError, match=r"loss became nan at step 2"):
        train(run, Registry(), console=quiet())


class InfWeights(torch.optim.SGD):
    """An optimizer that breaks one weight tensor on its first step, as a buggy optimizer paradigm would."""

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = super().step(closure)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(math.inf)
        return loss


class InfPlugin:
    @hookimpl
    def newcompute_register_paradigms(self) -> list[Paradigm]:
        return [Paradigm("inf-optimizer", "writes Inf into a weight (test)", SgdConfig, frozenset({Role.OPTIMIZER}))]

    @hookimpl
    def newcompute_build_optimizer(self, paradigm, config, params, settings):  # type: ignore[no-untyped-def]
        return InfWeights([i.param for i in params], lr=settings.lr)


def test_weights_that_are_not_finite_are_never_checkpointed(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(InfPlugin(), name="inf-plugin")
    run = tiny_run(tmp_path, {"inf-optimizer": {}}, steps=4, save_every=1, eval_every=100)
    with pytest.raises(RunError) as caught:
        train(run, registry, console=quiet())
    message = str(caught.value)
    assert "after the update of step 1, 1 weight tensor(s) hold NaN or Inf" in message
    assert "No good checkpoint had been written yet" in message
    assert complete_checkpoints(tmp_path) == [] and not list((tmp_path / "checkpoints").glob("*"))
    assert not (tmp_path / "model.safetensors").exists()


def test_a_high_loss_after_a_checkpoint_discards_it(tmp_path: Path) -> None:
    """The issue's run: --lr 0.5, patience 3, a checkpoint every step."""
    run = tiny_run(tmp_path, steps=40, lr=0.5, save_every=1, eval_every=100, divergence_patience=3)
    losses: dict[int, float] = {}
    console = quiet()
    with pytest.raises(RunError) as caught:
        train(run, Registry(), console=console, on_step=lambda step, loss: losses.__setitem__(step, loss))
    kept = read_state(complete_checkpoints(tmp_path)[-1])["step"]
    assert losses[kept + 1] <= 2 * min(losses[s] for s in losses if s <= kept)
    assert losses[kept + 2] > 2 * min(losses[s] for s in losses if s <= kept + 1)
    assert f"step {kept + 1}: checkpoint not kept: its weights scored loss {losses[kept + 2]:.4g}" in _flat(console)
    assert f"step-{kept:08d}" in str(caught.value)


def _flat(console) -> str:
    return " ".join(console.file.getvalue().split())


class NanWhenEvaluated(ReplacedLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight_out_in(), self.bias)
        return out if self.training else out * math.nan


class NanEvalPlugin:
    @hookimpl
    def newcompute_register_paradigms(self) -> list[Paradigm]:
        return [Paradigm("nan-eval", "NaN outputs in eval mode (test)", SgdConfig, frozenset({Role.LAYER}))]

    @hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return NanWhenEvaluated(module) if is_linear_like(module) else None


def test_a_final_validation_loss_that_is_not_finite_fails_the_run(tmp_path: Path) -> None:
    registry = Registry()
    registry.register(NanEvalPlugin(), name="nan-eval-plugin")
    run = tiny_run(tmp_path, {"nan-eval": {}}, steps=2, save_every=1, eval_every=100)
    with pytest.raises(RunError, match=r"the validation loss became nan at step 2; the final model was not saved"):
        train(run, registry, console=quiet())
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "model.safetensors").exists()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000001"]
