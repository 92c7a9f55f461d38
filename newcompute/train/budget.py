"""A run's budget and schedule: tokens, steps, batch geometry, learning rate, warm-up.

The defaults follow NewComputeBench. Fine-tuning a pretrained checkpoint
uses 22 × N_params / 100 tokens (a hundredth of the Chinchilla budget it
pretrained on); training from scratch uses the full 22 × N_params. The
effective batch is per-device batch × gradient accumulation × processes,
16 sequences by default. Learning rates come from a table by model size:
NewComputeBench swept 1e-7…1e-5 for optical fine-tuning and saw larger
models diverge at rates smaller models tolerate, so fine-tuning rates stay
below 1e-5 and shrink with size. Every default is reported with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from newcompute.config import TrainSettings
from newcompute.errors import ConfigError

Mode = Literal["scratch", "fine-tune", "lora"]

DEFAULT_BLOCK_SIZE = 1024
FINE_TUNE_TOKENS_PER_PARAM = 0.22
SCRATCH_TOKENS_PER_PARAM = 22.0
WARMUP_FRACTION = 0.05
MAX_EVAL_EVERY = 50

LR_TABLE: tuple[tuple[int, float, float, float], ...] = (
    (20_000_000, 1e-2, 8e-6, 1e-3),
    (150_000_000, 1e-3, 8e-6, 2e-4),
    (350_000_000, 6e-4, 5e-6, 2e-4),
    (800_000_000, 3e-4, 2e-6, 1e-4),
    (2**63, 2e-4, 1e-6, 5e-5),
)
"""Rows of (params up to, scratch lr, full fine-tuning lr, LoRA lr); docs/training.md shows it."""

_MODE_COLUMN = {"scratch": 1, "fine-tune": 2, "lora": 3}


@dataclass(frozen=True)
class Plan:
    mode: Mode
    params: int
    block_size: int
    batch_size: int
    micro_batch_size: int
    processes: int
    accumulation: int
    tokens: int
    steps: int
    lr: float
    warmup_steps: int
    eval_every: int
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Values changed from what was asked, one line each, printed before the run starts."""

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size


def resolve_block_size(requested: int | None, max_positions: int | None) -> tuple[int, str]:
    if requested is None:
        if max_positions is not None and max_positions < DEFAULT_BLOCK_SIZE:
            return max_positions, f"the model's context ({max_positions} positions)"
        return DEFAULT_BLOCK_SIZE, "the default"
    if max_positions is not None and requested > max_positions:
        raise ConfigError(
            f"train.block_size {requested} is larger than the model's context of {max_positions} positions; "
            f"use --block-size {max_positions} or less."
        )
    return requested, "as set"


def accumulation_steps(batch_size: int, micro_batch_size: int, processes: int) -> int:
    per_pass = micro_batch_size * processes
    if batch_size % per_pass:
        raise ConfigError(
            f"train.batch_size {batch_size} must be a multiple of micro_batch_size × processes "
            f"= {micro_batch_size} × {processes} = {per_pass}, since the effective batch is "
            "micro-batch × gradient accumulation × processes. Adjust --batch-size or --micro-batch-size."
        )
    return batch_size // per_pass


def default_lr(params: int, mode: Mode) -> tuple[float, str]:
    row = next(r for r in LR_TABLE if params <= r[0])
    size = "any larger model" if row is LR_TABLE[-1] else f"≤ {row[0] / 1e6:g}M params"
    return row[_MODE_COLUMN[mode]], f"the {mode} column, row {size}, of the table in docs/training.md"


def default_tokens(params: int, mode: Mode) -> tuple[int, str]:
    if mode == "scratch":
        return math.ceil(SCRATCH_TOKENS_PER_PARAM * params), f"22 × {params:,} params (training from scratch)"
    return (
        math.ceil(FINE_TUNE_TOKENS_PER_PARAM * params),
        f"22 × {params:,} params / 100 (NewComputeBench's fine-tuning budget)",
    )


def make_plan(
    settings: TrainSettings,
    params: int,
    mode: Mode,
    max_positions: int | None,
    processes: int = 1,
) -> Plan:
    """Fill in every default ``settings`` leaves open, and say where each value came from."""
    reasons: dict[str, str] = {}
    notes: list[str] = []
    block_size, reasons["block_size"] = resolve_block_size(settings.block_size, max_positions)
    accumulation = accumulation_steps(settings.batch_size, settings.micro_batch_size, processes)
    per_step = settings.batch_size * block_size
    if settings.steps is not None:
        steps, reasons["steps"] = settings.steps, "as set"
        tokens, reasons["tokens"] = steps * per_step, f"{steps} steps × {per_step:,} tokens"
    else:
        if settings.tokens is not None:
            tokens, reasons["tokens"] = settings.tokens, "as set"
        else:
            tokens, reasons["tokens"] = default_tokens(params, mode)
        steps = max(1, math.ceil(tokens / per_step))
        reasons["steps"] = f"{tokens:,} tokens / {per_step:,} per step"
    if settings.lr is not None:
        lr, reasons["lr"] = settings.lr, "as set"
    else:
        lr, reasons["lr"] = default_lr(params, mode)
    if settings.warmup_steps is not None and settings.warmup_steps > steps:
        warmup, reasons["warmup_steps"] = steps, f"clamped from {settings.warmup_steps} to the run's length"
        notes.append(
            f"train.warmup_steps {settings.warmup_steps} is longer than the run's {steps} steps: "
            f"clamped to {steps}."
        )
    elif settings.warmup_steps is not None:
        warmup, reasons["warmup_steps"] = settings.warmup_steps, "as set"
    else:
        warmup, reasons["warmup_steps"] = round(WARMUP_FRACTION * steps), "5% of the steps"
    eval_every = settings.eval_every or min(MAX_EVAL_EVERY, max(1, steps // 10))
    return Plan(
        mode=mode,
        params=params,
        block_size=block_size,
        batch_size=settings.batch_size,
        micro_batch_size=settings.micro_batch_size,
        processes=processes,
        accumulation=accumulation,
        tokens=tokens,
        steps=steps,
        lr=lr,
        warmup_steps=warmup,
        eval_every=eval_every,
        reasons=reasons,
        notes=notes,
    )
