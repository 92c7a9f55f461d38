"""Budget and schedule defaults: NewComputeBench's token rule, batch geometry, the lr table, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.config import TrainSettings
from newcompute.errors import ConfigError
from newcompute.train.budget import accumulation_steps, default_lr, make_plan, resolve_block_size


def test_fine_tuning_budget_is_22_tokens_per_hundred_params() -> None:
    # clm-400m has 455,697,600 parameters: 0.22 × N = 100,253,472 tokens; 16 × 1024 = 16,384 tokens a step
    # → 6118 full steps (100,237,312) and one more for the rest = 6119; warm-up round(0.05 × 6119) = 306.
    plan = make_plan(TrainSettings(), params=455_697_600, mode="fine-tune", max_positions=2048)
    assert (plan.tokens, plan.steps, plan.warmup_steps, plan.block_size) == (100_253_472, 6119, 306, 1024)
    assert (plan.batch_size, plan.micro_batch_size, plan.accumulation) == (16, 4, 4)
    assert plan.lr == 2e-6 and "fine-tune column" in plan.reasons["lr"]


def test_scratch_budget_is_22_tokens_per_param_and_block_follows_a_short_context() -> None:
    plan = make_plan(TrainSettings(), params=106_944, mode="scratch", max_positions=256)
    # 22 × 106,944 = 2,352,768 tokens / (16 × 256) = 574.4 → 575 steps.
    assert (plan.tokens, plan.block_size, plan.steps, plan.eval_every) == (2_352_768, 256, 575, 50)
    assert plan.reasons["block_size"] == "the model's context (256 positions)"
    assert plan.lr == 1e-2


def test_explicit_steps_define_the_tokens_and_processes_split_the_batch() -> None:
    plan = make_plan(
        TrainSettings(steps=10, batch_size=32, micro_batch_size=4, block_size=128, warmup_steps=50, lr=3e-4),
        params=10**9,
        mode="lora",
        max_positions=None,
        processes=2,
    )
    assert (plan.tokens, plan.accumulation, plan.warmup_steps, plan.lr) == (10 * 32 * 128, 4, 10, 3e-4)
    assert plan.eval_every == 1  # a tenth of 10 steps
    assert plan.reasons["lr"] == "as set"


@pytest.mark.parametrize(
    ("params", "mode", "lr"),
    [
        (20_000_000, "scratch", 1e-2),
        (20_000_001, "scratch", 1e-3),
        (82_000_000, "fine-tune", 8e-6),
        (262_000_000, "fine-tune", 5e-6),
        (680_000_000, "fine-tune", 2e-6),
        (1_145_000_000, "fine-tune", 1e-6),
        (1_145_000_000, "lora", 5e-5),
    ],
)
def test_lr_table_rows(params: int, mode: str, lr: float) -> None:
    assert default_lr(params, mode)[0] == lr


def test_explicit_eval_interval_is_kept() -> None:
    assert make_plan(TrainSettings(steps=60, eval_every=7), 10**5, "scratch", 256).eval_every == 7
    assert make_plan(TrainSettings(steps=60), 10**5, "scratch", 256).eval_every == 6


def test_every_fine_tuning_rate_is_below_1e_5() -> None:
    assert all(default_lr(p, "fine-tune")[0] < 1e-5 for p in (10**6, 10**8, 3 * 10**8, 7 * 10**8, 10**10))


def test_block_size_beyond_the_context_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"block_size 2048 is larger than the model's context of 256 positions"):
        resolve_block_size(2048, 256)


def test_batch_must_split_into_micro_batches_and_processes() -> None:
    with pytest.raises(ConfigError, match=r"multiple of micro_batch_size × processes = 4 × 3 = 12"):
        accumulation_steps(16, 4, 3)


def test_a_warm_up_longer_than_the_run_is_clamped_and_says_so(tmp_path: Path) -> None:
    plan = make_plan(TrainSettings(steps=10, warmup_steps=50), 10**5, "scratch", 256)
    assert plan.warmup_steps == 10 and plan.reasons["warmup_steps"] == "clamped from 50 to the run's length"
    assert plan.notes == ["train.warmup_steps 50 is longer than the run's 10 steps: clamped to 10."]
    assert make_plan(TrainSettings(steps=10, warmup_steps=10), 10**5, "scratch", 256).notes == []
    args = ["train", "--steps", "2", "--warmup-steps", "5", "--batch-size", "2", "--micro-batch-size", "2",
            "--block-size", "16", "--max-tokens", "2048", "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines.count("train.warmup_steps 5 is longer than the run's 2 steps: clamped to 2.") == 1
    assert "warmup_steps = 2" in (tmp_path / "run" / "newcompute.toml").read_text()
