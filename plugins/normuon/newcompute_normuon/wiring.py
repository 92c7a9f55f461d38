"""From the core's parameter table to the optimizer's parameter groups.

The core's classification decides the default (hidden matrices → NorMuon,
everything else → AdamW), ``overrides`` refine it by name, and parameters
whose resolved options agree share one group. Every choice is resolved
here, before training starts, so a typo in a pattern or an impossible
request fails with the parameter's name instead of surfacing mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from newcompute import ConfigError, OptimizerSettings, ParamInfo, ParamKind, name_matches

from newcompute_normuon.config import NorMuonConfig, ParamOverride
from newcompute_normuon.layout import SplitSpec, logical_shape, resolve_blocks

_DECAYED_BY_ADAMW = {ParamKind.HIDDEN_MATRIX, ParamKind.OUTPUT_HEAD}
_SHOWN_NAMES = 6


@dataclass(frozen=True)
class Choice:
    """The resolved options of one parameter; equal choices share a parameter group."""

    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    transposed: bool = False
    splits: SplitSpec = None

    def group_name(self, kind_label: str) -> str:
        tags = [kind_label]
        if self.transposed:
            tags.append("Conv1D, out×in")
        if self.splits is not None:
            tags.append(f"fused {self.splits}")
        return f"{self.optimizer} ({', '.join(tags)})"


def _default_choice(info: ParamInfo, config: NorMuonConfig, settings: OptimizerSettings) -> Choice:
    if info.kind == ParamKind.HIDDEN_MATRIX:
        return _as_normuon(info, config, settings)
    decay = settings.weight_decay if info.kind in _DECAYED_BY_ADAMW else 0.0
    return Choice("adamw", settings.lr, tuple(settings.betas), decay)


def _as_normuon(info: ParamInfo, config: NorMuonConfig, settings: OptimizerSettings) -> Choice:
    if info.param.ndim < 2:
        raise ConfigError(
            f"overrides: '{info.name}' has shape {tuple(info.param.shape)}; NorMuon orthogonalises matrices "
            "(2 or more dimensions). Train it with optimizer = 'adamw'."
        )
    decay = settings.weight_decay if config.weight_decay == "run" else config.weight_decay
    transposed = info.param.ndim == 2 and info.source_type == "Conv1D"
    return Choice("normuon", config.lr, (config.momentum, config.beta2), decay, transposed)


def _as_adamw(info: ParamInfo, settings: OptimizerSettings) -> Choice:
    decay = settings.weight_decay if info.kind in _DECAYED_BY_ADAMW else 0.0
    return Choice("adamw", settings.lr, tuple(settings.betas), decay)


def _apply_override(
    choice: Choice, rule: ParamOverride, info: ParamInfo, config: NorMuonConfig, settings: OptimizerSettings
) -> Choice:
    if rule.optimizer is not None and rule.optimizer != choice.optimizer:
        choice = _as_normuon(info, config, settings) if rule.optimizer == "normuon" else _as_adamw(info, settings)
    if rule.lr is not None:
        choice = replace(choice, lr=rule.lr)
    if rule.betas is not None:
        choice = replace(choice, betas=rule.betas)
    if rule.weight_decay is not None:
        choice = replace(choice, weight_decay=rule.weight_decay)
    return choice


def _unmatched(what: str, pattern: str, names: list[str]) -> ConfigError:
    shown = ", ".join(names[:_SHOWN_NAMES]) + (", …" if len(names) > _SHOWN_NAMES else "")
    return ConfigError(
        f"{what}: pattern {pattern!r} matches no trainable parameter. Patterns are shell globs on full "
        f"parameter names such as {shown}."
    )


def _kind_label(info: ParamInfo) -> str:
    return "decay" if info.kind in _DECAYED_BY_ADAMW else "no decay"


def resolve_choices(
    config: NorMuonConfig, params: list[ParamInfo], settings: OptimizerSettings
) -> list[tuple[ParamInfo, Choice]]:
    """Each parameter with its resolved options, in the order given."""
    names = [info.name for info in params]
    for rule in config.overrides:
        if not any(name_matches(rule.pattern, name) for name in names):
            raise _unmatched("overrides", rule.pattern, names)
    for spec in config.fused:
        if not any(name_matches(spec.pattern, name) for name in names):
            raise _unmatched("fused", spec.pattern, names)
    resolved = []
    for info in params:
        choice = _default_choice(info, config, settings)
        for rule in config.overrides:
            if name_matches(rule.pattern, info.name):
                choice = _apply_override(choice, rule, info, config, settings)
        for spec in config.fused:
            if not name_matches(spec.pattern, info.name):
                continue
            if choice.optimizer != "normuon":
                raise ConfigError(
                    f"fused: '{info.name}' matches {spec.pattern!r} but is trained with AdamW, which has no "
                    "matrices to split. Narrow the pattern to NorMuon matrices."
                )
            out_features, _ = logical_shape(info.param.shape, choice.transposed)
            resolve_blocks(spec.splits, out_features, info.name)
            choice = replace(choice, splits=spec.splits)
        resolved.append((info, choice))
    return resolved


def build_groups(
    config: NorMuonConfig, params: list[ParamInfo], settings: OptimizerSettings
) -> list[dict[str, Any]]:
    """Parameter groups for :class:`~newcompute_normuon.optimizer.NorMuonAdamW`, one per distinct choice.

    Parameters are given as ``(name, tensor)`` pairs, so torch records their
    names in the groups and error messages can name them.
    """
    groups: dict[tuple[Choice, str], dict[str, Any]] = {}
    names: set[str] = set()
    for info, choice in resolve_choices(config, params, settings):
        label = "matrices" if choice.optimizer == "normuon" else _kind_label(info)
        key = (choice, label)
        if key not in groups:
            name = choice.group_name(label)
            if name in names:
                name = f"{name} #{sum(n.startswith(name) for n in names) + 1}"
            names.add(name)
            groups[key] = _group_options(choice, config, settings) | {"name": name, "params": []}
        groups[key]["params"].append((info.name, info.param))
    return list(groups.values())


def _group_options(choice: Choice, config: NorMuonConfig, settings: OptimizerSettings) -> dict[str, Any]:
    common = {"optimizer": choice.optimizer, "lr": choice.lr, "weight_decay": choice.weight_decay}
    if choice.optimizer == "adamw":
        return common | {"betas": choice.betas, "eps": settings.eps}
    return common | {
        "momentum": choice.betas[0],
        "beta2": choice.betas[1],
        "nesterov": config.nesterov,
        "ns_steps": config.ns_steps,
        "coefficients": config.coefficients,
        "ns_dtype": config.ns_dtype,
        "transposed": choice.transposed,
        "splits": choice.splits,
    }
