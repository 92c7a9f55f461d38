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
A module a paradigm installs takes the training mode of the one it stands
in for, so a model in eval mode stays in eval mode.

What to apply can be said in several ways (:data:`Applicable`); config
instances find their paradigm through their class. The call's
``include``/``exclude``/``filter_fn`` narrow every paradigm in it, on top of
each paradigm's own rules (a :class:`Scope`, a TOML table, or by default
every module but the output head). A paradigm whose rules end up matching
no module, or whose plugin replaced nothing they matched, is a warning, or
with ``strict=True`` a :class:`~newcompute.ConfigError`.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from pydantic import BaseModel
from torch import nn

from newcompute.attention import (
    MATMULS_ATTR,
    AttentionMatmuls,
    find_attention_modules,
    record_intercepted,
    route_through_interface,
)
from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.culprit import tag
from newcompute.errors import ConfigError, NewcomputeWarning, RunError
from newcompute.paradigm import Role
from newcompute.params import ParamInfo
from newcompute.plugins import Registry, get_registry
from newcompute.rules import Rules

REPORT_ATTR = "newcompute_report"

FilterFn = Callable[[nn.Module, str], bool]
"""``filter_fn(module, name)``: whether a paradigm may touch the module with qualified name ``name``."""


@dataclass(frozen=True)
class Scope:
    """One paradigm with rules of its own, for :func:`apply`.

    ``config`` is a config instance or a paradigm name. ``include`` and
    ``exclude`` replace the default rules (every module but the output
    head); left ``None`` they keep the default. ``filter_fn`` narrows them
    further. ``Scope(OpticalConfig(), include=["*.self_attn*"])``.
    """

    config: BaseModel | str
    include: Sequence[str] | None = None
    exclude: Sequence[str] | None = None
    filter_fn: FilterFn | None = None


Applicable = Union[str, BaseModel, Scope, ParadigmUse, tuple[str, Mapping[str, Any]], Mapping[str, Mapping[str, Any]]]
"""What :func:`apply` accepts per paradigm: a name, a config instance, a :class:`Scope`, a resolved
:class:`~newcompute.ParadigmUse`, a ``(name, table)`` pair or a ``{name: table}`` mapping (a table as
under ``[paradigm.NAME]``, ``include``/``exclude`` included), or a list of these."""


def _group(names: list[str]) -> str:
    """``model.layers.*.mlp.up_proj ×22, …``: layer indices folded so a report stays short for deep models."""
    counts = Counter(re.sub(r"\.\d+(?=\.|$)", ".*", name) for name in names)
    return ", ".join(f"{pattern} ×{n}" if n > 1 else pattern for pattern, n in sorted(counts.items()))


@dataclass(repr=False)
class ComposeReport:
    """What ``apply`` did, for people (``print(report)``, ``newcompute transform``) and for run records."""

    model_type: str
    uses: list[ParadigmUse]
    replaced: dict[str, str] = field(default_factory=dict)
    replaced_types: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    attention: dict[str, list[str]] = field(default_factory=dict)
    optimizer_paradigm: str | None = None
    optimizer_groups: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def paradigms(self) -> list[str]:
        return [use.name for use in self.uses]

    @property
    def owners(self) -> dict[str, str]:
        """Each replaced layer and intercepted attention module → the paradigm that owns it."""
        owned = dict(self.replaced)
        for paradigm, names in self.attention.items():
            owned.update(dict.fromkeys(names, paradigm))
        return owned

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

    def __str__(self) -> str:
        lines = [f"{self.model_type} under {', '.join(self.paradigms) or 'no paradigm'}"]
        for use in self.uses:
            paradigm = use.paradigm
            lines.append(f"  {use.name} ({paradigm.plugin} {paradigm.version})".rstrip())
            kinds = [(src, dst, n) for (p, src, dst), n in sorted(self.replaced_types.items()) if p == use.name]
            for src, dst, n in kinds:
                lines.append(f"    {n} layer(s) {src} -> {dst}")
            layers = [name for name, owner in self.replaced.items() if owner == use.name]
            if layers:
                lines.append(f"      {_group(layers)}")
            if use.name in self.attention:
                lines.append(f"    attention in {len(self.attention[use.name])} module(s)")
                lines.append(f"      {_group(self.attention[use.name])}")
            if use.name == self.optimizer_paradigm:
                lines.append("    builds the optimizer")
            if not kinds and use.name not in self.attention and use.name != self.optimizer_paradigm:
                lines.append("    changed nothing")
        lines += [f"  warning: {message}" for message in self.warnings]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<ComposeReport {self.model_type}: {len(self.replaced)} layer(s) replaced, " + (
            f"{sum(map(len, self.attention.values()))} attention module(s) intercepted, paradigms {self.paradigms}>"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the readable form when a report is a cell's value."""
        printer.text(str(self))


@dataclass
class _Selection:
    """One paradigm in one call: its resolved use and everything that narrows the modules it may touch."""

    use: ParadigmUse
    narrowing: list[Rules] = field(default_factory=list)
    filters: list[FilterFn] = field(default_factory=list)
    admitted: int = 0

    def admits(self, name: str, module: nn.Module, head: str | None) -> bool:
        allowed = self.use.rules.allows(name, head) and all(r.allows(name, head) for r in self.narrowing)
        if allowed and self.filters:
            allowed = all(keep(module, name) for keep in self.filters)
        self.admitted += allowed
        return allowed

    @property
    def narrowed(self) -> bool:
        return bool(self.narrowing or self.filters)


def _rules(include: Sequence[str] | None, exclude: Sequence[str] | None, where: str) -> Rules:
    table: dict[str, Any] = {}
    if include is not None:
        table["include"] = list(include)
    if exclude is not None:
        table["exclude"] = list(exclude)
    return Rules.from_table(table, where=where)


def _resolve_config(registry: Registry, config: BaseModel | str) -> ParadigmUse:
    if isinstance(config, str):
        return resolve_paradigm(registry, config, {})
    if isinstance(config, BaseModel):
        return ParadigmUse(registry.paradigm_for_config(config), config, Rules())
    raise ConfigError(f"apply() got {type(config).__name__} where a paradigm name or config instance belongs.")


def _selections(items: Sequence[Any], registry: Registry) -> list[_Selection]:
    selections: list[_Selection] = []
    for item in items:
        if isinstance(item, ParadigmUse):
            selections.append(_Selection(item))
        elif isinstance(item, Scope):
            use = _resolve_config(registry, item.config)
            rules = _rules(item.include, item.exclude, where=f"Scope({use.name})")
            filters = [item.filter_fn] if item.filter_fn else []
            selections.append(_Selection(ParadigmUse(use.paradigm, use.config, rules), filters=filters))
        elif isinstance(item, (str, BaseModel)):
            selections.append(_Selection(_resolve_config(registry, item)))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], Mapping):
            selections.append(_Selection(resolve_paradigm(registry, item[0], dict(item[1]))))
        elif isinstance(item, Mapping):
            selections += [_Selection(resolve_paradigm(registry, name, dict(table))) for name, table in item.items()]
        elif isinstance(item, Sequence):
            selections += _selections(item, registry)
        else:
            raise ConfigError(
                f"apply() cannot apply a {type(item).__name__}: pass paradigm names, config instances, Scope(...), "
                "(name, table) pairs or {name: table} mappings."
            )
    return selections


def _check_uses(uses: list[ParadigmUse]) -> None:
    names = [u.name for u in uses]
    if len(set(names)) != len(names):
        raise ConfigError(f"Paradigm listed twice: {names}. Name each paradigm once.")
    optimizers = [u.name for u in uses if Role.OPTIMIZER in u.paradigm.roles]
    if len(optimizers) > 1:
        raise ConfigError(
            f"Paradigms '{optimizers[0]}' and '{optimizers[1]}' both build the optimizer; a run has one optimizer. "
            "Keep one of them."
        )


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


def _replace_layers(model: nn.Module, selections: list[_Selection], registry: Registry, report: ComposeReport) -> None:
    layer_selections = [sel for sel in selections if Role.LAYER in sel.use.paradigm.roles]
    if not layer_selections:
        return
    head = _head_name(model)
    replaced_prefixes: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(prefix) for prefix in replaced_prefixes):
            continue
        chosen: nn.Module | None = None
        for selection in layer_selections:
            use = selection.use
            if not selection.admits(name, module, head):
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
            tag(new, use.paradigm, name)
            chosen = new
        if chosen is not None:
            chosen.train(module.training)
            parent_name, _, leaf = name.rpartition(".")
            model.get_submodule(parent_name).add_module(leaf, chosen)
            replaced_prefixes.append(name + ".")


def _module_device(module: nn.Module) -> torch.device | None:
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else None


def _intercept_attention(
    model: nn.Module, selections: list[_Selection], registry: Registry, report: ComposeReport
) -> None:
    attention_selections = [sel for sel in selections if Role.ATTENTION in sel.use.paradigm.roles]
    if not attention_selections:
        return
    modules = find_attention_modules(model)
    if not modules:
        raise ConfigError(
            f"{type(model).__name__} has no attention modules that transformers' AttentionInterface calls, "
            f"so paradigm '{attention_selections[0].use.name}' cannot intercept attention."
        )
    owners: dict[str, str] = {}
    for name, attention in modules:
        for selection in attention_selections:
            use = selection.use
            if not selection.admits(name, attention, None):
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
            matmuls.train(attention.training)
            tag(matmuls, use.paradigm, name)
            device = _module_device(attention)
            attention.add_module(MATMULS_ATTR, matmuls.to(device) if device is not None else matmuls)
            report.attention.setdefault(use.name, []).append(name)
    if owners:
        route_through_interface(model)


def _unchanged(selection: _Selection, report: ComposeReport) -> str | None:
    """Why a layer or attention paradigm changed nothing, or ``None`` if it changed something."""
    use = selection.use
    if not use.paradigm.roles & {Role.LAYER, Role.ATTENTION}:
        return None
    if use.name in report.attention or use.name in report.replaced.values():
        return None
    rules = f"include {list(use.rules.include)}, exclude {list(use.rules.exclude)}"
    if selection.narrowed:
        rules += ", narrowed by the call's include/exclude/filter_fn"
    if not selection.admitted:
        return f"paradigm '{use.name}' changed nothing: its rules ({rules}) match no module of this model."
    return (
        f"paradigm '{use.name}' changed nothing: its plugin ({use.paradigm.plugin}) replaced none of the "
        f"{selection.admitted} module(s) its rules ({rules}) match."
    )


def _recorded(selection: _Selection, report: ComposeReport) -> ParadigmUse:
    """The use as a run record can repeat it: narrowed rules (a filter is code) become the exact module names."""
    use = selection.use
    if not selection.narrowed:
        return use
    names = [n for n, owner in report.replaced.items() if owner == use.name] + report.attention.get(use.name, [])
    return ParadigmUse(use.paradigm, use.config, Rules(include=tuple(names), exclude=()))


def apply(
    model: nn.Module,
    *paradigms: Applicable | Sequence[Applicable],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    filter_fn: FilterFn | None = None,
    registry: Registry | None = None,
    strict: bool = False,
) -> ComposeReport:
    """Apply ``paradigms`` to ``model`` in place and return the report.

    ``newcompute.apply(model, OpticalConfig(), include=["*.mlp.*"])``:
    each paradigm is a config instance (its class names the paradigm), a
    name, a :class:`Scope` with rules of its own, a ``(name, table)`` pair
    or ``{name: table}`` mapping, a resolved
    :class:`~newcompute.ParadigmUse`, or a list of these (the form
    ``apply(model, ["optical"], registry=...)``). ``include``, ``exclude``
    (glob or ``re:`` patterns on qualified module names) and ``filter_fn(module,
    name)`` apply to every paradigm of the call, on top of its own rules.
    A layer or attention paradigm that changes nothing warns
    (:class:`~newcompute.NewcomputeWarning`), or raises
    :class:`~newcompute.ConfigError` with ``strict=True``.
    """
    if hasattr(model, REPORT_ATTR):
        done = ", ".join(getattr(model, REPORT_ATTR).paradigms) or "none"
        raise ConfigError(
            f"This {type(model).__name__} was already transformed by newcompute (paradigms: {done}). "
            "Apply all paradigms in one call to a freshly built or loaded model."
        )
    registry = registry or get_registry()
    selections = _selections(paradigms, registry)
    _check_uses([sel.use for sel in selections])
    narrowing = [_rules(include, exclude, where="apply()")] if include is not None or exclude is not None else []
    for selection in selections:
        selection.narrowing += narrowing
        selection.filters += [filter_fn] if filter_fn else []
    report = ComposeReport(model_type=type(model).__name__, uses=[sel.use for sel in selections])
    _replace_layers(model, selections, registry, report)
    _intercept_attention(model, selections, registry, report)
    report.optimizer_paradigm = next((u.name for u in report.uses if Role.OPTIMIZER in u.paradigm.roles), None)
    report.warnings = [m for m in (_unchanged(sel, report) for sel in selections) if m]
    if report.warnings and strict:
        advice = " Fix its include/exclude rules, or go on with a warning without --strict."
        raise ConfigError(" ".join(report.warnings) + advice)
    for message in report.warnings:
        warnings.warn(message, NewcomputeWarning, stacklevel=2)
    report.uses = [_recorded(sel, report) for sel in selections]
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

