"""Applying several paradigms to one model, and saying what changed.

``apply`` edits the model in place: it offers each module (parents before
children; a replaced module's children are not offered again) to every
layer paradigm whose rules admit it, attaches attention matmuls, and
switches the model to the ``newcompute`` attention implementation. Two
paradigms claiming one module, or two optimizer paradigms, are errors that
name both. A model that was already transformed is refused rather than
transformed twice; build or load a fresh model instead. On the ``meta``
device nothing is materialised: replacements reuse the original
parameters, and matmul modules are moved to the attention module's device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from newcompute.attention import (
    MATMULS_ATTR,
    AttentionMatmuls,
    find_attention_modules,
    record_intercepted,
    route_through_interface,
)
from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.errors import ConfigError, RunError
from newcompute.paradigm import Role
from newcompute.params import ParamInfo
from newcompute.plugins import Registry, get_registry

REPORT_ATTR = "newcompute_report"


@dataclass
class ComposeReport:
    """What ``apply`` did, for people (``newcompute transform``) and for run records."""

    model_type: str
    uses: list[ParadigmUse]
    replaced: dict[str, str] = field(default_factory=dict)
    replaced_types: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    attention: dict[str, list[str]] = field(default_factory=dict)
    optimizer_paradigm: str | None = None
    optimizer_groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paradigms(self) -> list[str]:
        return [use.name for use in self.uses]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "paradigms": self.paradigms,
            "replaced": [
                {"paradigm": p, "from": src, "to": dst, "count": n}
                for (p, src, dst), n in sorted(self.replaced_types.items())
            ],
            "attention": {p: len(layers) for p, layers in self.attention.items()},
            "optimizer": self.optimizer_paradigm,
            "optimizer_groups": self.optimizer_groups,
        }


def _as_uses(paradigms: Sequence[ParadigmUse | str], registry: Registry) -> list[ParadigmUse]:
    uses = [p if isinstance(p, ParadigmUse) else resolve_paradigm(registry, p, {}) for p in paradigms]
    names = [u.name for u in uses]
    if len(set(names)) != len(names):
        raise ConfigError(f"Paradigm listed twice: {names}. Name each paradigm once.")
    optimizers = [u.name for u in uses if Role.OPTIMIZER in u.paradigm.roles]
    if len(optimizers) > 1:
        raise ConfigError(
            f"Paradigms '{optimizers[0]}' and '{optimizers[1]}' both build the optimizer; a run has one optimizer. "
            "Keep one of them."
        )
    return uses


def _head_name(model: nn.Module) -> str | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return None
    return next((name for name, module in model.named_modules() if module is head), None)


def _claim(claims: dict[str, str], name: str, paradigm: str, what: str) -> None:
    if name in claims:
        raise ConfigError(
            f"{what} '{name}' is claimed by both paradigms '{claims[name]}' and '{paradigm}'. "
            "Narrow their include/exclude rules so each module has one owner."
        )
    claims[name] = paradigm


def _replace_layers(model: nn.Module, uses: list[ParadigmUse], registry: Registry, report: ComposeReport) -> None:
    layer_uses = [u for u in uses if Role.LAYER in u.paradigm.roles]
    if not layer_uses:
        return
    head = _head_name(model)
    replaced_prefixes: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(prefix) for prefix in replaced_prefixes):
            continue
        chosen: nn.Module | None = None
        for use in layer_uses:
            if not use.rules.allows(name, head):
                continue
            new = registry.call("newcompute_replace_layer", use.paradigm, config=use.config, name=name, module=module)
            if new is None:
                continue
            if not isinstance(new, nn.Module):
                raise RunError(
                    f"Paradigm '{use.name}' returned {type(new).__name__} for layer '{name}'; "
                    "newcompute_replace_layer must return an nn.Module or None."
                )
            _claim(report.replaced, name, use.name, "Layer")
            report.replaced_types[(use.name, type(module).__name__, type(new).__name__)] += 1
            chosen = new
        if chosen is not None:
            parent_name, _, leaf = name.rpartition(".")
            model.get_submodule(parent_name).add_module(leaf, chosen)
            replaced_prefixes.append(name + ".")


def _module_device(module: nn.Module) -> torch.device | None:
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else None


def _intercept_attention(model: nn.Module, uses: list[ParadigmUse], registry: Registry, report: ComposeReport) -> None:
    attention_uses = [u for u in uses if Role.ATTENTION in u.paradigm.roles]
    if not attention_uses:
        return
    modules = find_attention_modules(model)
    if not modules:
        raise ConfigError(
            f"{type(model).__name__} has no attention modules that transformers' AttentionInterface calls, "
            f"so paradigm '{attention_uses[0].name}' cannot intercept attention."
        )
    owners: dict[str, str] = {}
    for name, attention in modules:
        for use in attention_uses:
            if not use.rules.allows(name):
                continue
            matmuls = registry.call(
                "newcompute_attention_matmuls", use.paradigm, config=use.config, name=name, attention=attention
            )
            if matmuls is None:
                continue
            if not isinstance(matmuls, AttentionMatmuls):
                raise RunError(
                    f"Paradigm '{use.name}' returned {type(matmuls).__name__} for attention '{name}'; "
                    "newcompute_attention_matmuls must return a newcompute.AttentionMatmuls or None."
                )
            _claim(owners, name, use.name, "Attention module")
            device = _module_device(attention)
            attention.add_module(MATMULS_ATTR, matmuls.to(device) if device is not None else matmuls)
            report.attention.setdefault(use.name, []).append(name)
    if owners:
        route_through_interface(model)


def apply(
    model: nn.Module,
    paradigms: Sequence[ParadigmUse | str],
    registry: Registry | None = None,
) -> ComposeReport:
    """Apply ``paradigms`` to ``model`` in place and return the report.

    ``paradigms`` are names (default configs and rules) or resolved
    :class:`~newcompute.config.ParadigmUse` objects.
    """
    if hasattr(model, REPORT_ATTR):
        done = ", ".join(getattr(model, REPORT_ATTR).paradigms) or "none"
        raise ConfigError(
            f"This {type(model).__name__} was already transformed by newcompute (paradigms: {done}). "
            "Apply all paradigms in one call to a freshly built or loaded model."
        )
    registry = registry or get_registry()
    uses = _as_uses(paradigms, registry)
    report = ComposeReport(model_type=type(model).__name__, uses=uses)
    _replace_layers(model, uses, registry, report)
    _intercept_attention(model, uses, registry, report)
    report.optimizer_paradigm = next((u.name for u in uses if Role.OPTIMIZER in u.paradigm.roles), None)
    setattr(model, REPORT_ATTR, report)
    return report


def report_of(model: nn.Module) -> ComposeReport | None:
    return getattr(model, REPORT_ATTR, None)


def verify_attention(model: nn.Module, tokens: int = 4) -> None:
    """Run a short forward and check every intercepted attention module was really called.

    Catches models whose attention bypasses the interface for some layers,
    which would otherwise be a silent no-op.
    """
    report = report_of(model)
    expected = {name for layers in (report.attention.values() if report else []) for name in layers}
    if not expected:
        return
    device = next(model.parameters()).device
    ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    with torch.no_grad(), record_intercepted() as seen:
        model(input_ids=ids)
    missing = [name for name in sorted(expected) if id(model.get_submodule(name)) not in seen]
    if missing:
        raise RunError(
            f"{type(model).__name__}: attention interception was not reached for {len(missing)} layer(s) "
            f"(first: '{missing[0]}'). This model's attention bypasses transformers' AttentionInterface."
        )


def _group_label(group: dict[str, Any], index: int) -> str:
    return str(group.get("name") or group.get("optimizer") or f"group {index}")


def summarize_optimizer(optimizer: torch.optim.Optimizer, params: list[ParamInfo]) -> list[dict[str, Any]]:
    """One row per parameter group: label, lr, and how many parameters of each kind it holds."""
    kinds = {id(info.param): info.kind.value for info in params}
    rows = []
    for index, group in enumerate(optimizer.param_groups):
        counts = Counter(kinds.get(id(p), "other") for p in group["params"])
        rows.append(
            {
                "group": _group_label(group, index),
                "optimizer": type(optimizer).__name__,
                "lr": group.get("lr"),
                "params": sum(counts.values()),
                "numel": sum(p.numel() for p in group["params"]),
                "kinds": dict(sorted(counts.items())),
            }
        )
    return rows

