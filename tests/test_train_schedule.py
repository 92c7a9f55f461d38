"""--schedule: each learning-rate curve against its formula, recorded in the run, and the same after --resume."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from test_train_paradigms import make_registry, quiet, tiny_run

from newcompute.config import RunConfig
from newcompute.errors import ConfigError
from newcompute.train import train
from newcompute.train.setup import check_resumable
from newcompute.train.schedule import build_scheduler, wsd_decay_steps

STEPS, WARMUP = 10, 2


def _reference(schedule: str, step: int) -> float:
    """The factor of the peak rate used by optimizer step ``step`` (1-based), written out by hand."""
    done = step - 1
    if done < WARMUP:
        return done / WARMUP
    after = (done - WARMUP) / (STEPS - WARMUP)
    if schedule == "linear":
        return 1 - after
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * after))
    if schedule == "constant":
        return 1.0
    decay = round(0.2 * STEPS)
    stable = STEPS - WARMUP - decay
    if done < WARMUP + stable:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (done - WARMUP - stable) / decay))


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant", "wsd"])
def test_each_schedule_follows_its_formula(schedule: str) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = build_scheduler(optimizer, schedule, WARMUP, STEPS)  # type: ignore[arg-type]
    rates = []
    for _ in range(STEPS):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.5 * _reference(schedule, step) for step in range(1, STEPS + 1)], abs=1e-12)


def test_wsd_decay_never_eats_into_the_warm_up() -> None:
    assert wsd_decay_steps(10, 2) == 2 and wsd_decay_steps(100, 95) == 5 and wsd_decay_steps(3, 3) == 0


def _rates(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["lr"] for line in lines if line["kind"] == "train"}


def _ctrl_c_at(step: int):
    def callback(at: int, loss: float) -> None:
        if at == step:
            signal.raise_signal(signal.SIGINT)

    return callback


def test_a_resumed_wsd_run_continues_the_same_rates_and_a_changed_schedule_is_refused(tmp_path: Path) -> None:
    registry = make_registry()
    settings = dict(steps=STEPS, warmup_steps=WARMUP, lr=0.01, schedule="wsd", eval_every=100, save_every=100)
    full = tmp_path / "full"
    train(tiny_run(full, **settings), registry, console=quiet())
    assert _rates(full) == pytest.approx({s: 0.01 * _reference("wsd", s) for s in range(1, STEPS + 1)})
    assert 'schedule = "wsd"' in (full / "newcompute.toml").read_text()

    cut = tmp_path / "cut"
    first = train(tiny_run(cut, **settings), registry, console=quiet(), on_step=_ctrl_c_at(5))
    assert first.status == "interrupted" and first.step < STEPS
    with pytest.raises(ConfigError, match=r"train\.schedule: 'wsd' in the checkpoint, 'cosine' now"):
        train(tiny_run(cut, **{**settings, "schedule": "cosine"}), registry, console=quiet(), resume=True)
    train(tiny_run(cut, **settings), registry, console=quiet(), resume=True)
    assert _rates(cut) == _rates(full)


def test_a_checkpoint_from_before_schedules_existed_resumes_as_linear() -> None:
    now = RunConfig.model_validate({"train": {"steps": 4}}).model_dump(mode="json", exclude_none=True)
    saved = json.loads(json.dumps(now))
    del saved["train"]["schedule"]
    check_resumable(saved, now)
    cosine = {**now, "train": {**now["train"], "schedule": "cosine"}}
    with pytest.raises(ConfigError, match=r"train\.schedule: 'linear' in the checkpoint, 'cosine' now"):
        check_resumable(saved, cosine)
