"""Checks on a transformed model: it keeps its interface, its checkpoints and its devices.

A replacement may compute anything, but the model around it must not
notice: same output shapes, dtypes and devices for every replaced module,
the original parameter names and layouts (so checkpoints load into the
unmodified model), and no tensor left behind on another device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from newcompute.attention import products_only
from newcompute.composer import ComposeReport, apply, verify_attention
from newcompute.config import resolve_paradigm
from newcompute.paradigm import Role
from newcompute.plugins import Registry
from newcompute.testing.failure import require
from newcompute.testing.models import build_tiny, sample_batch
from newcompute.testing.partner import PARTNER_ATTENTION
from newcompute.testing.spec import ConformanceSpec


def _describe(value: Any) -> list[tuple[tuple[int, ...], torch.dtype, torch.device]]:
    if isinstance(value, torch.Tensor):
        return [(tuple(value.shape), value.dtype, value.device)]
    if isinstance(value, (tuple, list)):
        return [item for element in value for item in _describe(element)]
    return []


def _capture(model: nn.Module, names: list[str], ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def hook_for(name: str) -> Any:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            seen.setdefault(name, _describe(output))

        return record

    handles = [model.get_submodule(name).register_forward_hook(hook_for(name)) for name in names]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, seen


def _compare_parameters(spec: ConformanceSpec, family: str, reference: nn.Module, model: nn.Module) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, original in reference.named_parameters(remove_duplicate=False):
        require(
            name in params,
            f"{spec.paradigm} on {family}: parameter {name!r} disappeared. Replacements must keep the original "
            "parameter names (subclass newcompute.ReplacedLinear, which reuses the source's parameters).",
        )
        new = params[name]
        require(
            (new.shape, new.dtype, new.device) == (original.shape, original.dtype, original.device),
            f"{spec.paradigm} on {family}: parameter {name!r} changed from {tuple(original.shape)} "
            f"{original.dtype} {original.device} to {tuple(new.shape)} {new.dtype} {new.device}; checkpoints "
            "of the unmodified model would no longer load.",
        )
    keys = set(model.state_dict())
    missing = sorted(set(reference.state_dict()) - keys)
    require(
        not missing, f"{spec.paradigm} on {family}: state-dict keys of the original model are missing: {missing[:5]}"
    )


def _changed_something(spec: ConformanceSpec, family: str, report: ComposeReport, roles: frozenset[Role]) -> None:
    if roles & {Role.LAYER, Role.ATTENTION}:
        require(
            bool(report.replaced) or bool(report.attention),
            f"{spec.paradigm} on {family} declares roles {sorted(r.value for r in roles)} but with table "
            f"{dict(spec.table)} it replaced no layer and intercepted no attention module.",
        )


def _exact_reference(
    registry: Registry, family: str, intercepted: list[str], routed: bool, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """The unmodified model, run through the core's attention path wherever the paradigm's model is.

    That path returns attention probabilities and rounds differently from
    PyTorch's SDPA, so comparisons must not mix the two.
    """
    reference = build_tiny(family, dtype=dtype)
    if routed:
        partner = resolve_paradigm(registry, PARTNER_ATTENTION, {"include": intercepted})
        apply(reference, [partner], registry=registry)
    return reference


def check_transform(spec: ConformanceSpec, family: str = "tiny", dtype: torch.dtype = torch.float32) -> None:
    """Applying the paradigm keeps every replaced module's outputs, the parameters and the logits' form."""
    registry = spec.registry()
    use = spec.use(registry)
    model = build_tiny(family, dtype=dtype)
    report = apply(model, [use], registry=registry)
    _changed_something(spec, family, report, use.paradigm.roles)
    intercepted = sorted(name for names in report.attention.values() for name in names)
    routed = Role.ATTENTION in use.paradigm.roles
    reference = _exact_reference(registry, family, intercepted, routed, dtype)
    _compare_parameters(spec, family, reference, model)
    if report.attention:
        verify_attention(model)
    watched = sorted(report.replaced) + intercepted
    ids = sample_batch()
    expected_logits, expected = _capture(reference, watched, ids)
    logits, got = _capture(model, watched, ids)
    for name in watched:
        require(
            got.get(name) == expected.get(name),
            f"{spec.paradigm} on {family} ({dtype}): module {name!r} returns {got.get(name)} "
            f"(shape, dtype, device) where the original returns {expected.get(name)}.",
        )
    require(
        (logits.shape, logits.dtype) == (expected_logits.shape, expected_logits.dtype),
        f"{spec.paradigm} on {family}: logits are {tuple(logits.shape)} {logits.dtype}, "
        f"expected {tuple(expected_logits.shape)} {expected_logits.dtype}.",
    )
    require(bool(torch.isfinite(logits).all()), f"{spec.paradigm} on {family} ({dtype}): logits are not finite.")


def check_meta_device(spec: ConformanceSpec, family: str = "tiny") -> None:
    """On the ``meta`` device nothing is materialised: every tensor the paradigm adds stays on ``meta``."""
    registry = spec.registry()
    model = build_tiny(family, device="meta")
    apply(model, [spec.use(registry)], registry=registry)
    elsewhere = [
        f"{name} ({tensor.device})"
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.device.type != "meta"
    ]
    require(
        not elsewhere,
        f"{spec.paradigm} on a meta-device {family}: tensors created off the model's device: {elsewhere[:5]}. "
        "Create buffers with device=source.weight.device.",
    )


def _loss_and_grads(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    model.train()
    torch.manual_seed(0)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.eval()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def _equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def check_identity(spec: ConformanceSpec, family: str = "tiny", table: Mapping[str, Any] | None = None) -> None:
    """Under its identity table the paradigm computes exactly what the unmodified model computes.

    Forward and backward are compared bit for bit. Where the paradigm
    intercepts attention, the reference uses exact products through the
    same core attention path, since that path and PyTorch's SDPA round
    differently.
    """
    identity = table if table is not None else spec.identity_table
    require(identity is not None, f"{spec.paradigm}: no identity table given.")
    registry = spec.registry()
    use = spec.use(registry, identity)
    model = build_tiny(family)
    report = apply(model, [use], registry=registry)
    intercepted = sorted(name for names in report.attention.values() for name in names)
    reference = _exact_reference(registry, family, intercepted, Role.ATTENTION in use.paradigm.roles)
    ids = sample_batch()
    with torch.no_grad():
        expected, got = reference(input_ids=ids).logits, model(input_ids=ids).logits
    require(
        torch.equal(got, expected),
        f"{spec.paradigm} on {family} with {dict(identity)} is not the identity: logits differ by up to "
        f"{(got - expected).abs().max().item():.3g}.",
    )
    expected_loss, expected_grads = _loss_and_grads(reference, ids)
    loss, grads = _loss_and_grads(model, ids)
    require(torch.equal(loss, expected_loss), f"{spec.paradigm} on {family}: training loss differs under identity.")
    different = [name for name, grad in expected_grads.items() if not _equal(grads.get(name), grad)]
    require(
        not different,
        f"{spec.paradigm} on {family} with {dict(identity)}: gradients differ from the unmodified model's "
        f"for {different[:5]}.",
    )


def _largest_gap(got: torch.Tensor | None, expected: torch.Tensor | None) -> float:
    """The largest difference relative to the largest expected magnitude (0 when both are missing)."""
    if got is None or expected is None:
        return 0.0 if got is None and expected is None else float("inf")
    scale = expected.abs().max().clamp_min(1e-12)
    return ((got - expected).abs().max() / scale).item()


def check_attend(spec: ConformanceSpec, family: str = "tiny", device: str = "cpu", tolerance: float = 0.05) -> None:
    """Where the paradigm takes the whole attention (``attend``), it computes what its two products compute.

    Two copies of one model take one training step from the same state, one
    with attention through ``attend`` wherever it is offered and one through
    ``qk`` and ``pv`` only. A fused kernel sums in another order, so logits,
    loss and gradients must agree within ``tolerance`` of their largest
    magnitude rather than bit for bit. Paradigms that never take the whole
    attention pass trivially.
    """
    registry = spec.registry()
    use = spec.use(registry)
    ids = sample_batch(device=device)
    results = []
    for fused in (True, False):
        model = build_tiny(family, device=device)
        apply(model, [use], registry=registry)
        with contextlib.nullcontext() if fused else products_only():
            logits = model(input_ids=ids).logits.detach()
            loss, grads = _loss_and_grads(model, ids)
        results.append((logits, loss, grads))
    (logits, loss, grads), (expected_logits, expected_loss, expected_grads) = results
    gaps = {"logits": _largest_gap(logits, expected_logits), "loss": _largest_gap(loss, expected_loss)}
    gaps.update({name: _largest_gap(grads.get(name), grad) for name, grad in expected_grads.items()})
    worst = max(gaps, key=gaps.__getitem__)
    require(
        gaps[worst] <= tolerance,
        f"{spec.paradigm} on {family} ({device}): attention through attend differs from its qk/pv products "
        f"by {gaps[worst]:.3g} of the largest value in {worst} (allowed {tolerance}).",
    )
