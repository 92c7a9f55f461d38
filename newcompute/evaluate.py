"""Validation loss and perplexity of a (transformed) model, and lm-eval-harness tasks.

The same function scores the trainer's periodic and final evaluations and
``newcompute eval``, so a saved run reloads to the loss it reported. An
evaluation leaves the model as it found it: paradigms keep statistics and
counters in buffers, and noisy paradigms draw random numbers, so buffers
are restored afterwards and the random generators are forked and seeded,
which makes the score a function of the weights, the data and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from newcompute.errors import ConfigError


@dataclass(frozen=True)
class EvalResult:
    loss: float
    perplexity: float
    tokens: int
    blocks: int


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite rather than an overflow error for a diverged loss."""
    return math.exp(loss) if loss < 700 else math.inf


@contextmanager
def unchanged(model: nn.Module, seed: int) -> Iterator[None]:
    """Run the block in eval mode with seeded random numbers, then restore buffers, RNG and mode."""
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)
            with torch.no_grad():
                for name, buffer in model.named_buffers():
                    buffer.copy_(saved[name])


def evaluate_loss(
    model: nn.Module,
    blocks: np.ndarray,
    micro_batch_size: int,
    accelerator: Accelerator,
    seed: int = 0,
    max_batches: int | None = None,
) -> EvalResult:
    """Mean next-token loss over ``blocks`` (every predicted token weighs the same) and its perplexity.

    Processes score interleaved shares of the blocks and their sums are
    added, so the result does not depend on the number of processes beyond
    floating-point order. Every process runs the same number of forward
    passes, even where its share is one block short: FSDP2 gathers weights
    and paradigms agree on statistics with collectives inside the forward,
    and a rank that skipped one would pair its next collective with the
    wrong partner. The short process repeats its first block for that pass
    and leaves it out of the sums.
    """
    if blocks.ndim != 2 or blocks.shape[0] == 0:
        raise ConfigError("There are no validation blocks to evaluate on.")
    count = blocks.shape[0] if max_batches is None else min(blocks.shape[0], max_batches * micro_batch_size)
    mine = blocks[:count][accelerator.process_index :: accelerator.num_processes]
    passes = math.ceil(math.ceil(count / accelerator.num_processes) / micro_batch_size)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with unchanged(model, seed), torch.no_grad():
        for start in range(0, passes * micro_batch_size, micro_batch_size):
            share = mine[start : start + micro_batch_size]
            counted = share.shape[0] > 0
            batch = torch.as_tensor(share if counted else blocks[:1], dtype=torch.long, device=accelerator.device)
            with accelerator.autocast():
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            if counted:
                predicted = batch.shape[0] * (batch.shape[1] - 1)
                totals[0] += loss.double() * predicted
                totals[1] += predicted
    totals = accelerator.reduce(totals, reduction="sum") if accelerator.num_processes > 1 else totals
    mean = float(totals[0] / totals[1])
    return EvalResult(mean, perplexity(mean), int(totals[1]), count)


def run_lm_eval(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[str],
    batch_size: int,
    limit: int | None = None,
    include_paths: list[Path] | None = None,
    registry_tasks: bool = True,
) -> dict[str, Any]:
    """Run lm-eval-harness ``tasks`` on the in-memory model through its HF wrapper (optional dependency).

    ``include_paths`` are folders of local task YAML; without ``registry_tasks`` lm-eval's own task registry
    is not indexed at all (it holds thousands of files), since only local tasks are asked for.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(
            "--tasks runs EleutherAI's lm-evaluation-harness, which is not installed: "
            "pip install 'newcompute[eval]' (or pip install lm-eval)."
        ) from None
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=[str(p) for p in include_paths or []] or None, include_defaults=registry_tasks)
    results = lm_eval.simple_evaluate(model=wrapped, tasks=tasks, limit=limit, task_manager=manager)
    if results is None:
        raise ConfigError(f"lm-eval returned no results for tasks {tasks}.")
    return dict(results.get("results", {}))
