"""Checks of a paradigm's statistics: named, described, finite, on the device, and free while telemetry is off."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from newcompute.composer import apply
from newcompute.errors import RunError
from newcompute.optim import build_optimizer
from newcompute.params import OptimizerSettings
from newcompute.plugins import Registry
from newcompute.telemetry.accumulate import StatisticSums, collect_statistics
from newcompute.telemetry.statistics import LayerStatistic, read_statistics
from newcompute.testing.failure import ConformanceFailure, require
from newcompute.testing.models import build_tiny, sample_batch
from newcompute.testing.spec import ConformanceSpec

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _untouched(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, StatisticSums) and not m.untouched()]


def _read(
    spec: ConformanceSpec, model: nn.Module, registry: Registry, optimizer: torch.optim.Optimizer
) -> list[LayerStatistic]:
    try:
        return read_statistics(model, registry, optimizer=optimizer)
    except RunError as exc:
        raise ConformanceFailure(f"{spec.paradigm}: its statistics break the contract: {exc}") from None


def _check_each(spec: ConformanceSpec, stats: list[LayerStatistic]) -> None:
    for s in stats:
        name, description = s.statistic.name, s.statistic.description
        require(
            bool(SNAKE_CASE.match(name)),
            f"{spec.paradigm}: statistic {name!r} of {s.layer!r} is not snake_case; tables, CSV columns and "
            "tracker keys use the name as it is.",
        )
        require(
            "\n" not in description.strip(),
            f"{spec.paradigm}: the description of {name!r} spans several lines; give one line (tables print it).",
        )
        if s.statistic.is_vector:
            _check_vector(spec, s)


def _check_vector(spec: ConformanceSpec, s: LayerStatistic) -> None:
    """Bins finite and increasing (they become histogram bucket limits and CSV column names); counts ≥ 0."""
    name, bins = s.statistic.name, s.statistic.bins
    require(
        all(math.isfinite(b) for b in bins) and all(a < b for a, b in zip(bins, bins[1:])),
        f"{spec.paradigm}: the bins of {name!r} of {s.layer!r} must be finite and strictly increasing, got "
        f"{bins[:8]}{'…' if len(bins) > 8 else ''}.",
    )
    if s.statistic.is_histogram:
        require(
            all(count >= 0 for count in s.value),
            f"{spec.paradigm}: histogram {name!r} of {s.layer!r} has a negative count; bins count occurrences.",
        )


def check_statistics(spec: ConformanceSpec, family: str = "tiny", device: str | torch.device = "cpu") -> None:
    """Statistics measured only while collection is on; then named, described, finite and on the device.

    A training step with collection off must leave every
    :class:`~newcompute.StatisticSums` as built (nothing extra runs); a step
    with it on, and the hooks' reports read through the core, must pass the
    core's checks (a ``Statistic`` with name, description and unit; a 0-d
    floating tensor on the module's device, 1-D with one entry per bin for a
    vector statistic; a finite value), and names must be snake_case with
    one-line descriptions, bins finite and increasing, histogram counts ≥ 0.
    """
    registry = spec.registry()
    model = build_tiny(family, device=device).train()
    apply(model, [spec.use(registry)], registry=registry)
    optimizer = build_optimizer(model, OptimizerSettings(lr=spec.lr), registry=registry)
    ids = sample_batch(device=device)
    _train_step(model, optimizer, ids)
    touched = _untouched(model)
    require(
        not touched,
        f"{spec.paradigm} on {family}: {touched} accumulated statistics while collection was off; measure only "
        "while newcompute.collecting_statistics() is true, so runs without telemetry pay nothing.",
    )
    with collect_statistics():
        _train_step(model, optimizer, ids)
    stats = _read(spec, model, registry, optimizer)
    _check_each(spec, stats)


def check_statistics_leave_outputs(spec: ConformanceSpec, family: str = "tiny") -> None:
    """Collecting statistics does not change what the model computes (for deterministic paradigms)."""
    registry = spec.registry()
    outputs = []
    for collecting in (False, True):
        model = build_tiny(family)
        apply(model, [spec.use(registry)], registry=registry)
        with torch.no_grad(), collect_statistics(enabled=collecting):
            outputs.append(model(input_ids=sample_batch()).logits)
    require(
        torch.equal(outputs[0], outputs[1]),
        f"{spec.paradigm} on {family}: the model's output changes while statistics are collected (max difference "
        f"{(outputs[0] - outputs[1]).abs().max().item():.3g}); measure beside the computation, never in it.",
    )
