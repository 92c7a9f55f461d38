"""What ``newcompute eval`` scores: a saved run rebuilt exactly, or a model under paradigms.

For a run folder the recorded settings (data, block size, seed, micro-batch,
precision) are reused, so the held-out blocks and their batching are the
ones the run's final evaluation used and the loss comes out the same. Only
the blocks the validation rule can pick are read, so evaluating a run
trained on a large corpus does not re-read all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from newcompute import run_files
from newcompute.composer import apply, verify_attention
from newcompute.config import RunConfig, load_run_config, resolve_paradigms
from newcompute.evaluate import EvalResult, evaluate_loss
from newcompute.models import load_model
from newcompute.plugins import Registry, get_registry
from newcompute.record import RECORD_FILE
from newcompute.run_lock import RunLock
from newcompute.train.budget import resolve_block_size
from newcompute.train.compare import LM_EVAL_FILE, read_lm_eval
from newcompute.train.packing import PackedCorpus, pack, validation_period
from newcompute.train.runs import load_run
from newcompute.train.setup import max_positions, mixed_precision, precision_text
from newcompute.train.sources import open_source
from newcompute.train.streaming import read_head


@dataclass
class EvalTarget:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    run: RunConfig
    corpus: PackedCorpus
    accelerator: Accelerator
    used: list[tuple[str, str]]


def _validation_corpus(
    run: RunConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, registry: Registry | None
) -> tuple[PackedCorpus, str]:
    block_size, _ = resolve_block_size(run.train.block_size, max_positions(model))
    needed = validation_period(run.data.validation_fraction) * run.data.validation_max_blocks * block_size
    limit = min(needed, run.data.max_tokens) if run.data.max_tokens is not None else needed
    source = open_source(run.data, registry)
    if run.data.streaming:
        head = read_head(source, tokenizer, block_size, run.data).validation
        empty = np.zeros((0, block_size), dtype=np.int32)
        rows = np.zeros(0, dtype=np.int64)
        stream = PackedCorpus(empty, rows, head, block_size, head.size, 0, False, "end-of-text token", "streamed")
        return stream, source.description + " (streamed: the head of the stream)"
    return pack(source, tokenizer, block_size, run.data, run.train.seed, limit), source.description


def _target(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, run: RunConfig, model_text: str, registry: Registry | None
) -> EvalTarget:
    corpus, data_text = _validation_corpus(run, model, tokenizer, registry)
    accelerator = Accelerator(mixed_precision=mixed_precision(run.train.mixed_precision))
    model.to(accelerator.device)
    used = [
        ("Model", model_text),
        ("Data", f"{data_text}: {corpus.validation.shape[0]} validation blocks of {corpus.block_size} tokens"),
        ("Precision", precision_text(accelerator)),
    ]
    return EvalTarget(model, tokenizer, run, corpus, accelerator, used)


def load_run_for_eval(
    folder: Path,
    overrides: list[str] | None = None,
    registry: Registry | None = None,
    trust_remote_code: bool = False,
) -> EvalTarget:
    """A run folder's model as trained, with its own data settings unless ``overrides`` change them."""
    model, tokenizer, _ = load_run(folder, registry=registry, trust_remote_code=trust_remote_code)
    run = load_run_config(folder / RECORD_FILE, overrides)
    paradigms = ", ".join(run.paradigm) or "no paradigms"
    return _target(model, tokenizer, run, f"the run saved in {folder} ({run.model.name}, {paradigms})", registry)


def load_model_for_eval(
    run: RunConfig,
    paradigms: list[str] | None = None,
    registry: Registry | None = None,
    trust_remote_code: bool = False,
) -> EvalTarget:
    """A model by name with ``paradigms`` applied, as ``newcompute transform`` would build it."""
    registry = registry or get_registry()
    uses = resolve_paradigms(registry, run, paradigms)
    loaded = load_model(run.model, seed=run.train.seed, trust_remote_code=trust_remote_code, registry=registry)
    apply(loaded.model, uses, registry=registry, strict=run.train.strict)
    loaded.model.eval()
    verify_attention(loaded.model)
    names = ", ".join(u.name for u in uses) or "no paradigms"
    return _target(
        loaded.model,
        loaded.tokenizer,
        run,
        f"{loaded.source} ({names}); tokenizer: {loaded.tokenizer_source}",
        registry,
    )


def evaluate_model(target: EvalTarget, batch_size: int | None = None, max_blocks: int | None = None) -> EvalResult:
    blocks = target.corpus.validation[:max_blocks] if max_blocks is not None else target.corpus.validation
    return evaluate_loss(
        target.model,
        blocks,
        batch_size or target.run.train.micro_batch_size,
        target.accelerator,
        seed=target.run.train.seed,
    )


def save_lm_eval(run_dir: Path, scores: dict[str, dict[str, Any]]) -> Path:
    """Add lm-eval ``scores`` to the run folder's ``lm_eval.json`` (a task scored again is replaced), under the
    folder's lock; ``compare`` and ``results`` show them."""
    with RunLock(run_dir):
        numeric = {
            task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for task, metrics in scores.items()
        }
        merged = read_lm_eval(run_dir) | numeric
        return run_files.write_text(run_dir, LM_EVAL_FILE, json.dumps(merged, indent=1, sort_keys=True) + "\n")

