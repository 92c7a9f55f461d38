"""Whether each point's paradigms can be applied together, found before any point runs.

Two layer paradigms whose rules both match a module (``optical`` and
``mxfp8`` with their default rules) are only refused when they are applied
to a model. A point that would fail that way is found here by applying its
paradigms to a skeleton of its model on the ``meta`` device: the model's
structure without memory or weights, built from its config in a moment
even for a billion parameters. One skeleton is tried per distinct model and
paradigm rules. A model whose config cannot be read offline (a hub id not in
the cache, a model with its own code) is checked when its point starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from newcompute.composer import apply
from newcompute.config import RunConfig, resolve_paradigms
from newcompute.errors import ConfigError
from newcompute.plugins import Registry
from newcompute.study.grid import Point, value_text


def _skeleton(name: str, registry: Registry) -> nn.Module | None:
    """The model's structure on the meta device, or None when its config is not available offline."""
    if name in registry.presets:
        config = registry.presets[name].build_config()
    elif (Path(name).expanduser() / "config.json").is_file():
        try:
            config = AutoConfig.from_pretrained(Path(name).expanduser(), trust_remote_code=False)
        except (OSError, ValueError):
            return None
    else:
        return None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _rules_key(run: RunConfig) -> tuple[Any, ...]:
    return (
        run.model.name,
        tuple((name, repr(table.get("include")), repr(table.get("exclude"))) for name, table in run.paradigm.items()),
    )


def check_compositions(points: Sequence[Point], registry: Registry, where: str) -> None:
    """Raise ConfigError naming the first point whose paradigms cannot be applied together."""
    tried: set[tuple[Any, ...]] = set()
    for point in points:
        run = point.run_config()
        key = _rules_key(run)
        if len(run.paradigm) < 2 or key in tried:
            continue
        tried.add(key)
        model = _skeleton(run.model.name, registry)
        if model is None:
            continue
        shown = ", ".join(f"{k} = {value_text(v)}" for k, v in point.values.items())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rules that match nothing are reported when the point runs
            try:
                apply(model, resolve_paradigms(registry, run), registry=registry)
            except ConfigError as exc:
                raise ConfigError(f"{where}, point {point.name} ({shown}): {exc}") from None
