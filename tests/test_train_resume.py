"""An interrupted run resumed from its checkpoint equals the run that was never interrupted, bit for bit (CPU)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_train_paradigms import make_registry, quiet, tiny_run

from newcompute.config import RunConfig
from newcompute.errors import ConfigError
from newcompute.record import PARADIGM_STATE_FILE
from newcompute.train import train
from newcompute.train.checkpoint import complete_checkpoints, read_state

PARADIGMS = {"int8ish": {}, "noisy-attention": {"std": 0.05}}


def _ctrl_c_at(step: int):
    def callback(at: int, loss: float) -> None:
        if at == step:
            signal.raise_signal(signal.SIGINT)

    return callback


def _squeezed(text: str) -> str:
    return re.sub(r"[\s│]+", "", text)


def _with_data(run: RunConfig, data: dict[str, Any]) -> RunConfig:
    for key, value in data.items():
        setattr(run.data, key, value)
    return run


@pytest.mark.parametrize(
    "data, tokens",
    [
        ({"cache": False}, "tokenized now (cache off)"),
        ({"cache": True}, "tokens from the cache"),  # the uninterrupted run filled the cache
        ({"streaming": True, "max_tokens": 800}, "streamed"),  # 4 + 21 blocks a pass: the run reads two
        ({"data_workers": 2}, "tokens from the cache"),  # batches from DataLoader worker processes
        ({"streaming": True, "max_tokens": 800, "data_workers": 1}, "streamed"),  # the position from the worker
    ],
    ids=["packed", "cached", "streaming", "packed-workers", "streaming-worker"],
)
def test_resume_after_ctrl_c_repeats_the_uninterrupted_run(tmp_path: Path, data: dict[str, Any], tokens: str) -> None:
    registry = make_registry()
    settings = dict(steps=8, eval_every=3, save_every=100)
    full = train(_with_data(tiny_run(tmp_path / "full", PARADIGMS, **settings), data), registry, console=quiet())

    cut = tmp_path / "cut"
    console = quiet()
    first = train(
        _with_data(tiny_run(cut, PARADIGMS, **settings), data), registry, console=console, on_step=_ctrl_c_at(3)
    )
    shown = _squeezed(console.file.getvalue())  # the table wraps long cells
    assert _squeezed(tokens) in shown
    workers = data.get("data_workers", 0)
    why = "--data-workers" if "data_workers" in data else "the default on cpu"
    assert _squeezed(f"torch DataLoader, {workers} worker process(es) ({why}") in shown
    # The flag raised after step 3 is agreed on during step 4, which completes and is saved before stopping.
    assert (first.status, first.step) == ("interrupted", 4)
    assert [p.name for p in complete_checkpoints(cut)] == ["step-00000004"]
    assert not (cut / "summary.json").exists()
    position = read_state(complete_checkpoints(cut)[0])["data"]
    assert position["kind"] == ("stream" if data.get("streaming") else "packed") and position["sample"] == 16

    second = train(_with_data(tiny_run(cut, PARADIGMS, **settings), data), registry, console=quiet(), resume=True)
    assert second.status == "finished"
    assert sorted(second.losses) == [5, 6, 7, 8]
    assert {**first.losses, **second.losses} == full.losses
    assert second.final == full.final

    full_weights, resumed_weights = (
        load_file(run / "model.safetensors") | load_file(run / PARADIGM_STATE_FILE) for run in (tmp_path / "full", cut)
    )
    assert full_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(full_weights[k], resumed_weights[k]) for k in full_weights)
    # The paradigm's running statistic travelled through the checkpoint too, into the paradigm state file.
    assert full_weights["model.layers.0.mlp.up_proj.x_absmax"].item() > 0
    assert "model.layers.0.mlp.up_proj.x_absmax" not in load_file(cut / "model.safetensors")

    full_lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    resumed_lines = (cut / "metrics.jsonl").read_text().splitlines()
    drop_speed = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in full_lines]
    assert drop_speed == [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in resumed_lines]


def test_a_streamed_text_file_resumes_at_the_saved_byte_and_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    from pydoc_data.topics import topics

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(topics[name] for name in sorted(topics)), encoding="utf-8")
    registry = make_registry()
    data = {"streaming": True, "max_tokens": None, "dataset": str(corpus)}
    settings = dict(steps=6, eval_every=100, save_every=100)
    full = train(_with_data(tiny_run(tmp_path / "full", **settings), data), registry, console=quiet())
    cut = tmp_path / "cut"
    first = train(_with_data(tiny_run(cut, **settings), data), registry, console=quiet(), on_step=_ctrl_c_at(2))
    assert (first.status, first.step) == ("interrupted", 3)
    position = read_state(complete_checkpoints(cut)[0])["data"]
    assert position["kind"] == "stream" and position["byte"] is not None
    second = train(_with_data(tiny_run(cut, **settings), data), registry, console=quiet(), resume=True)
    assert sorted(second.losses) == [4, 5, 6]
    assert {**first.losses, **second.losses} == full.losses and second.final == full.final


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


def test_resume_skips_a_torn_metrics_line_and_falls_back_past_damaged_checkpoints(tmp_path: Path) -> None:
    registry = make_registry()
    settings = dict(steps=8, save_every=2, keep_checkpoints=3, eval_every=100)
    first = train(tiny_run(tmp_path, PARADIGMS, **settings), registry, console=quiet(), on_step=_ctrl_c_at(5))
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000004", "step-00000006"]
    newest, middle = tmp_path / "checkpoints" / "step-00000006", tmp_path / "checkpoints" / "step-00000004"
    weights = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a truncated copy
    (middle / "trainer_state.json").write_text("{not json")
    with open(tmp_path / "metrics.jsonl", "a") as metrics:
        metrics.write('{"kind": "train", "st')  # a kill in the middle of a write

    console = quiet()
    second = train(tiny_run(tmp_path, PARADIGMS, **settings), registry, console=console, resume=True)
    shown = " ".join(console.file.getvalue().split())
    assert f"Checkpoint step-00000006 is damaged (model.safetensors has {len(weights) // 2:,} bytes where" in shown
    assert "Checkpoint step-00000004 is damaged (trainer_state.json cannot be read" in shown
    assert "Resuming from step-00000002, the newest intact checkpoint." in shown
    assert "metrics.jsonl: skipped its last line, cut off by a run stopped in the middle of writing it" in shown
    assert second.status == "finished" and sorted(second.losses) == [3, 4, 5, 6, 7, 8]
    assert {s: second.losses[s] for s in (3, 4, 5, 6)} == {s: first.losses[s] for s in (3, 4, 5, 6)}
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8, 8]  # train steps, then the final evaluation
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} >= {"damaged-step-00000004", "damaged-step-00000006"}
