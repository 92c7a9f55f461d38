"""Validation loss against a reference computed by hand, and evaluations that leave the model untouched."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_train_paradigms import make_registry
from torch.nn import functional as F

from newcompute.composer import apply
from newcompute.config import ModelSettings, RunConfig, resolve_paradigms
from newcompute.errors import ConfigError
from newcompute.evaluate import evaluate_loss, perplexity, run_lm_eval
from newcompute.models import load_model
from newcompute.testing import run_ranks
from newcompute.train.evaluation import evaluate_model, load_model_for_eval


def _blocks(count: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 257, size=(count, length)).astype(np.int32)


def test_loss_is_the_token_mean_of_next_token_cross_entropy() -> None:
    model = load_model(ModelSettings(name="tiny", init="scratch"), seed=1).model
    blocks = _blocks(5, 12)
    result = evaluate_loss(model, blocks, micro_batch_size=2, accelerator=Accelerator(cpu=True))
    with torch.no_grad():
        ids = torch.as_tensor(blocks, dtype=torch.long)
        logits = model(input_ids=ids).logits.double()
        total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
    expected = total.item() / (5 * 11)
    assert (result.blocks, result.tokens) == (5, 55)
    assert result.loss == pytest.approx(expected, rel=1e-6)
    assert result.perplexity == pytest.approx(np.exp(expected), rel=1e-6)


def test_max_batches_scores_the_first_blocks_only() -> None:
    model = load_model(ModelSettings(name="tiny", init="scratch"), seed=1).model
    blocks = _blocks(6, 8)
    accelerator = Accelerator(cpu=True)
    first_four = evaluate_loss(model, blocks[:4], 2, accelerator)
    assert evaluate_loss(model, blocks, 2, accelerator, max_batches=2) == first_four


def _evaluate_five_blocks_counting_passes(rank: int, device: torch.device) -> tuple[float, int, int]:
    model = load_model(ModelSettings(name="tiny", init="scratch"), seed=1).model
    passes = []
    model.register_forward_pre_hook(lambda module, args: passes.append(1))
    result = evaluate_loss(model, _blocks(5, 12), micro_batch_size=2, accelerator=Accelerator(cpu=True))
    return result.loss, result.tokens, len(passes)


def test_processes_with_uneven_shares_run_as_many_forwards_and_score_each_block_once() -> None:
    """Five blocks over two processes in pairs: the second process's share (two blocks) is one pass short of
    the first's (three blocks); it must still run that pass, since collectives inside the forward (FSDP2's
    all-gathers, paradigms' statistics) pair up across processes, but must not count it."""
    single = evaluate_loss(
        load_model(ModelSettings(name="tiny", init="scratch"), seed=1).model, _blocks(5, 12), 2, Accelerator(cpu=True)
    )
    ranks = run_ranks(_evaluate_five_blocks_counting_passes)
    assert [passes for _, _, passes in ranks] == [2, 2]
    for loss, tokens, _ in ranks:
        assert tokens == single.tokens == 55
        assert loss == pytest.approx(single.loss, rel=1e-6)


def test_evaluation_restores_buffers_rng_and_mode() -> None:
    registry = make_registry()
    model = load_model(ModelSettings(name="tiny", init="scratch")).model
    run = RunConfig.model_validate({"paradigm": {"int8ish": {}, "noisy-attention": {"std": 0.5}}})
    apply(model, resolve_paradigms(registry, run), registry=registry)
    model.train()
    model(input_ids=torch.arange(16)[None] % 257)  # sets the running maxima from a training batch
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    blocks = _blocks(4, 16)
    first = evaluate_loss(model, blocks, 2, Accelerator(cpu=True), seed=5)
    second = evaluate_loss(model, blocks, 2, Accelerator(cpu=True), seed=5)
    assert first == second
    assert evaluate_loss(model, blocks, 2, Accelerator(cpu=True), seed=6) != first  # the noise is really seeded
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    assert buffers["model.layers.0.self_attn.newcompute_matmuls.calls"].item() == 1  # only the training forward


def test_perplexity_of_a_diverged_loss_is_infinite() -> None:
    assert perplexity(2.0) == pytest.approx(7.38905609893065)
    assert perplexity(1e6) == float("inf")


def test_model_by_name_under_paradigms() -> None:
    registry = make_registry()
    run = RunConfig.model_validate(
        {
            "model": {"name": "tiny", "init": "scratch"},
            "train": {"block_size": 32, "micro_batch_size": 2},
            "data": {"max_tokens": 4096, "validation_max_blocks": 3},
            "paradigm": {"int8ish": {}},
        }
    )
    target = load_model_for_eval(run, registry=registry)
    assert "int8ish" in target.used[0][1] and "3 validation blocks of 32 tokens" in target.used[1][1]
    reference = load_model(run.model, seed=0).model
    apply(reference, resolve_paradigms(registry, run), registry=registry)
    expected = evaluate_loss(reference, target.corpus.validation, 2, Accelerator(cpu=True))
    assert evaluate_model(target) == expected


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval is installed")
def test_tasks_without_lm_eval_say_what_to_install() -> None:
    model = load_model(ModelSettings(name="tiny", init="scratch"))
    with pytest.raises(ConfigError, match=r"pip install 'newcompute\[eval\]'"):
        run_lm_eval(model.model, model.tokenizer, ["hellaswag"], batch_size=2)
