"""Checks that a transformed model trains, composes with another plugin, and stays on the GPU.

The loop here is deliberately minimal (forward with labels, backward,
optimizer step): it tests the paradigm, not the trainer.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter

import torch
from torch import nn

from newcompute.composer import ComposeReport, apply, verify_attention
from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.layers import is_linear_like
from newcompute.optim import build_optimizer
from newcompute.paradigm import Role
from newcompute.params import OptimizerSettings
from newcompute.plugins import Registry
from newcompute.rules import HEAD_ALIAS
from newcompute.testing.failure import ConformanceFailure, require
from newcompute.testing.models import build_tiny, sample_batch
from newcompute.testing.partner import PARTNER_ATTENTION, PARTNER_LAYER
from newcompute.testing.spec import ConformanceSpec

TRAIN_STEPS = 5


def _gradients_reach(spec: ConformanceSpec, family: str, model: nn.Module, report: ComposeReport) -> None:
    for name in report.replaced:
        params = dict(model.get_submodule(name).named_parameters())
        starved = [leaf for leaf, p in params.items() if p.requires_grad and p.grad is None]
        silent = bool(params) and all(p.grad is None or not bool(p.grad.any()) for p in params.values())
        require(
            not starved and not silent,
            f"{spec.paradigm} on {family}: no gradient reaches the parameters {starved or list(params)} of replaced "
            f"layer {name!r}. Rounding or sampling steps need a straight-through or otherwise defined backward.",
        )


def _step(model: nn.Module, ids: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach()


def check_trains(spec: ConformanceSpec, family: str = "tiny") -> None:
    """A few optimizer steps on a repeated batch: finite losses, gradients through every replacement, learning."""
    registry = spec.registry()
    model = build_tiny(family).train()
    report = apply(model, [spec.use(registry)], registry=registry)
    optimizer = build_optimizer(model, OptimizerSettings(lr=spec.lr), registry=registry)
    if Role.OPTIMIZER in spec.declared(registry).roles:
        require(report.optimizer_paradigm == spec.paradigm, f"{spec.paradigm} did not build the optimizer.")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = sample_batch()
    losses = []
    for step in range(TRAIN_STEPS):
        loss = _step(model, ids, seed=step)
        require(
            bool(torch.isfinite(loss)),
            f"{spec.paradigm} on {family}: loss is {loss.item()} at step {step} (lr {spec.lr}).",
        )
        if step == 0:
            _gradients_reach(spec, family, model, report)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    frozen = [name for name, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[name])]
    require(not frozen, f"{spec.paradigm} on {family}: {len(frozen)} parameters never changed, e.g. {frozen[:3]}.")
    if spec.learns:
        require(
            losses[-1] < losses[0],
            f"{spec.paradigm} on {family}: the loss on a repeated batch did not fall in {TRAIN_STEPS} steps "
            f"at lr {spec.lr}: {[round(x, 4) for x in losses]}.",
        )


def _split_layers(spec: ConformanceSpec, registry: Registry, family: str) -> tuple[list[str], list[str]]:
    """Layers the paradigm keeps in composition, and linear layers handed to the partner.

    The partner gets the second half of the paradigm's own linear layers
    and every linear layer the paradigm leaves alone (the output head stays
    untouched, as the core's default rules keep it).
    """
    plain = build_tiny(family)
    head = plain.get_output_embeddings()
    linear = {name for name, module in plain.named_modules() if is_linear_like(module) and module is not head}
    report = apply(build_tiny(family), [spec.use(registry)], registry=registry)
    own = sorted(report.replaced)
    given = {name for name in own[len(own) // 2 :] if name in linear}
    untouched = {
        name for name in linear if not any(name == n or name.startswith(n + ".") for n in report.replaced)
    }
    return [name for name in own if name not in given], sorted(given | untouched)


def _composed_uses(spec: ConformanceSpec, registry: Registry, given: list[str]) -> list[ParadigmUse]:
    table = dict(spec.table)
    table["exclude"] = [*table.get("exclude", [HEAD_ALIAS]), *given]
    uses = [spec.use(registry, table)]
    if given:
        uses.append(resolve_paradigm(registry, PARTNER_LAYER, {"include": given}))
    if Role.ATTENTION not in spec.declared(registry).roles:
        uses.append(resolve_paradigm(registry, PARTNER_ATTENTION, {}))
    return uses


def check_composes(spec: ConformanceSpec, family: str = "tiny") -> None:
    """Composed with another plugin's paradigms, each owns exactly its modules and the model still trains."""
    registry = spec.registry()
    kept, given = _split_layers(spec, registry, family)
    model = build_tiny(family).train()
    report = apply(model, _composed_uses(spec, registry, given), registry=registry)
    for name in kept:
        require(
            report.replaced.get(name) == spec.paradigm,
            f"{spec.paradigm} on {family}: in composition, layer {name!r} went to {report.replaced.get(name)}.",
        )
    for name in given:
        require(
            report.replaced.get(name) == PARTNER_LAYER,
            f"{spec.paradigm} on {family}: layer {name!r}, excluded by rules, was taken by "
            f"{report.replaced.get(name)} instead of the partner paradigm.",
        )
    if Role.ATTENTION not in spec.declared(registry).roles:
        require(
            bool(report.attention.get(PARTNER_ATTENTION)),
            f"{spec.paradigm} on {family}: the partner's attention interception did not attach in composition.",
        )
    verify_attention(model)
    optimizer = build_optimizer(model, OptimizerSettings(lr=spec.lr), registry=registry)
    ids = sample_batch()
    loss = _step(model, ids, seed=0)
    optimizer.step()
    require(math.isfinite(loss.item()), f"{spec.paradigm} on {family}: composed model's loss is {loss.item()}.")


def _train_step_on_gpu(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _sync_sites(model: nn.Module, optimizer: torch.optim.Optimizer) -> Counter[str]:
    """Where one warmed-up training step synchronises the host with the GPU, by source line."""
    ids = sample_batch(device="cuda")
    for _ in range(2):
        _train_step_on_gpu(model, optimizer, ids)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _train_step_on_gpu(model, optimizer, ids)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower())


def check_no_host_sync(spec: ConformanceSpec, family: str = "tiny") -> None:
    """On CUDA, a bf16-autocast training step with the paradigm synchronises no more than one without it."""
    if not torch.cuda.is_available():
        raise ConformanceFailure("check_no_host_sync needs a CUDA device.")
    registry = spec.registry()
    settings = OptimizerSettings(lr=spec.lr)
    uses = [spec.use(registry)]
    baseline = build_tiny(family, device="cuda").train()
    if Role.ATTENTION in uses[0].paradigm.roles:
        apply(baseline, [resolve_paradigm(registry, PARTNER_ATTENTION, {})], registry=registry)
    expected = _sync_sites(baseline, build_optimizer(baseline, settings, registry=registry))
    model = build_tiny(family, device="cuda").train()
    apply(model, uses, registry=registry)
    off_device = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if not t.is_cuda]
    require(not off_device, f"{spec.paradigm}: tensors left off the GPU after apply: {off_device[:5]}")
    extra = _sync_sites(model, build_optimizer(model, settings, registry=registry)) - expected
    require(
        not extra,
        f"{spec.paradigm} on {family}: a training step synchronises the host with the GPU "
        f"{sum(extra.values())} more time(s) than without the paradigm, at {sorted(extra)[:5]}. "
        "Keep counters and statistics on the device (no .item(), no Python branching on tensor values).",
    )
