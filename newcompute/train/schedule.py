"""The learning-rate schedule: a warm-up, then linear, cosine, constant or warmup-stable-decay, from transformers.

transformers' ``get_scheduler`` builds each one as a ``LambdaLR`` whose
factor depends only on the step count, so the count saved in a checkpoint
is all a resumed run needs to continue the same sequence of rates.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.optim.lr_scheduler import LRScheduler
from transformers import get_scheduler

Schedule = Literal["linear", "cosine", "constant", "wsd"]

WSD_DECAY_FRACTION = 0.2
"""Share of the steps a warmup-stable-decay run spends decaying: Hägele et al. 2024, "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations" (arXiv:2405.18392), find a cooldown of about 20% of
the steps matches a cosine schedule of the same length."""

_TRANSFORMERS_NAME = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
    "wsd": "warmup_stable_decay",
}


def wsd_decay_steps(steps: int, warmup_steps: int) -> int:
    """The decay steps of a wsd schedule: 20% of the run, fewer if the warm-up leaves less."""
    return max(0, min(round(WSD_DECAY_FRACTION * steps), steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, warmup_steps: int, steps: int) -> LRScheduler:
    extra = {"num_decay_steps": wsd_decay_steps(steps, warmup_steps)} if schedule == "wsd" else None
    return get_scheduler(
        _TRANSFORMERS_NAME[schedule],
        optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=steps,
        scheduler_specific_kwargs=extra,
    )


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
