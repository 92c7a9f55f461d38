"""Checks that a transformed model's state saves, loads and resumes exactly.

Paradigm state (running ranges, generator counters, step counts) must live
in the state dict: that is what ``newcompute train --resume`` and
``newcompute.load`` restore, so anything kept elsewhere is silently lost.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from newcompute.composer import apply
from newcompute.config import ModelSettings, RunConfig
from newcompute.optim import build_optimizer
from newcompute.params import OptimizerSettings
from newcompute.plugins import Registry
from newcompute.record import load, save_transformed
from newcompute.testing.failure import ConformanceFailure, require
from newcompute.testing.models import build_tiny, sample_batch
from newcompute.testing.spec import ConformanceSpec
from newcompute.tokenizer import byte_tokenizer


def _advance(model: nn.Module) -> None:
    """One training forward and backward, so counters and running statistics leave their initial values."""
    model.train()
    torch.manual_seed(0)
    ids = sample_batch()
    model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()


def _transformed(spec: ConformanceSpec, registry: Registry, family: str, seed: int) -> nn.Module:
    model = build_tiny(family, seed=seed)
    apply(model, [spec.use(registry)], registry=registry)
    return model


def _same_logits(spec: ConformanceSpec, family: str, a: nn.Module, b: nn.Module, what: str) -> None:
    ids = sample_batch(seed=1)
    with torch.no_grad():
        first, second = a(input_ids=ids).logits, b(input_ids=ids).logits
    require(
        torch.equal(first, second),
        f"{spec.paradigm} on {family}: {what} computes different logits (up to "
        f"{(first - second).abs().max().item():.3g} apart). Keep all paradigm state in buffers.",
    )


def check_state_dict_round_trip(spec: ConformanceSpec, family: str = "tiny") -> None:
    """A state dict loads strictly into a freshly transformed model, and the original keys into the plain model."""
    registry = spec.registry()
    source = _transformed(spec, registry, family, seed=0)
    _advance(source)
    state = source.state_dict()
    target = _transformed(spec, registry, family, seed=1)
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConformanceFailure(
            f"{spec.paradigm} on {family}: a transformed model's state dict does not load into another one: {exc}"
        ) from None
    plain = build_tiny(family, seed=1)
    plain_keys = set(plain.state_dict())
    plain.load_state_dict({k: v for k, v in state.items() if k in plain_keys}, strict=True)
    moved = [
        name
        for name, param in plain.named_parameters()
        if not torch.equal(param, source.get_parameter(name))
    ]
    require(
        not moved,
        f"{spec.paradigm} on {family}: parameters {moved[:5]} hold different values under their original names; "
        "keep the source layer's layout (ReplacedLinear reuses it).",
    )
    if spec.deterministic:
        _same_logits(spec, family, source, target, "the model restored from the state dict")


def check_save_load(spec: ConformanceSpec, family: str, folder: Path) -> None:
    """``save_transformed`` then ``newcompute.load`` rebuilds the same model, paradigm state included."""
    registry = spec.registry()
    model = _transformed(spec, registry, family, seed=0)
    _advance(model)
    run = RunConfig(model=ModelSettings(name=family, init="scratch"))
    try:
        save_transformed(model, byte_tokenizer(), run, folder)
    except TypeError as exc:
        raise ConformanceFailure(f"{spec.paradigm} on {family}: saving the transformed model failed: {exc}") from None
    loaded, _ = load(folder, registry=registry)
    if spec.deterministic:
        _same_logits(spec, family, model, loaded.eval(), "the model loaded back from disk")


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> list[float]:
    losses = []
    for step in steps:
        ids = sample_batch(seed=step)
        torch.manual_seed(1000 + step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def check_resume(spec: ConformanceSpec, family: str = "tiny") -> None:
    """Training resumed from model and optimizer state dicts continues exactly as the uninterrupted run."""
    registry = spec.registry()
    settings = OptimizerSettings(lr=spec.lr)
    model = _transformed(spec, registry, family, seed=0).train()
    optimizer = build_optimizer(model, settings, registry=registry)
    _train(model, optimizer, range(0, 2))
    model_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    expected = _train(model, optimizer, range(2, 4))
    resumed = _transformed(spec, registry, family, seed=1).train()
    resumed_optimizer = build_optimizer(resumed, settings, registry=registry)
    resumed.load_state_dict(model_state)
    resumed_optimizer.load_state_dict(optimizer_state)
    got = _train(resumed, resumed_optimizer, range(2, 4))
    require(got == expected, f"{spec.paradigm} on {family}: resumed losses {got} differ from {expected}.")
    differ = [
        name for name, param in resumed.named_parameters() if not torch.equal(param, model.get_parameter(name))
    ]
    require(not differ, f"{spec.paradigm} on {family}: after resuming, parameters {differ[:5]} differ.")
