"""The learning-rate schedule: a warm-up, then linear, cosine, constant or warmup-stable-decay.

Each is a ``LambdaLR`` whose factor depends only on the step count, so the
count saved in a checkpoint is all a resumed run needs to continue the same
sequence of rates. The factors are those of transformers' ``get_scheduler``
("linear", "cosine", "constant_with_warmup" and "warmup_stable_decay" with
its defaults), float for float, written here because importing
``transformers.optimization`` imports its trainer utilities and peft: most
of a second of start-up that a run without LoRA does not otherwise need.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

Schedule = Literal["linear", "cosine", "constant", "wsd"]

WSD_DECAY_FRACTION = 0.2
"""Share of the steps a warmup-stable-decay run spends decaying: Hägele et al. 2024, "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations" (arXiv:2405.18392), find a cooldown of about 20% of
the steps matches a cosine schedule of the same length."""

def wsd_decay_steps(steps: int, warmup_steps: int) -> int:
    """The decay steps of a wsd schedule: 20% of the run, fewer if the warm-up leaves less."""
    return max(0, min(round(WSD_DECAY_FRACTION * steps), steps - warmup_steps))


def _half_cosine(progress: float) -> float:
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _factor(step: int, *, schedule: Schedule, warmup_steps: int, steps: int, decay_steps: int) -> float:
    """The factor of the peak rate after ``step`` optimizer steps."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        decay_start = steps - decay_steps
        if step < decay_start:
            return 1.0
        return _half_cosine(float(step - decay_start) / float(max(1, decay_steps))) if step < steps else 0.0
    left = float(max(1, steps - warmup_steps))
    if schedule == "linear":
        return max(0.0, float(steps - step) / left)
    return _half_cosine(float(step - warmup_steps) / left)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, warmup_steps: int, steps: int) -> LRScheduler:
    decay_steps = wsd_decay_steps(steps, warmup_steps) if schedule == "wsd" else 0
    factor = partial(_factor, schedule=schedule, warmup_steps=warmup_steps, steps=steps, decay_steps=decay_steps)
    return LambdaLR(optimizer, factor)


def describe(schedule: Schedule, warmup_steps: int, warmup_reason: str, steps: int) -> str:
    """The schedule in words, for the run's summary."""
    warmup = f"linear warm-up for {warmup_steps} steps ({warmup_reason})"
    if schedule == "linear":
        return f"{warmup}, then linear decay to 0"
    if schedule == "cosine":
        return f"{warmup}, then half-cosine decay to 0"
    if schedule == "constant":
        return f"{warmup}, then constant"
    decay = wsd_decay_steps(steps, warmup_steps)
    return f"{warmup}, constant for {steps - warmup_steps - decay}, then half-cosine decay to 0 over the last {decay}"
