"""The statistics hook: a hand-computed saturation fraction, read on demand; broken reports name the plugin."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel
from torch import nn

import newcompute as nc
from newcompute.telemetry.statistics import Statistic, read_statistics
from tests.conftest import tiny

SATURATED = Statistic("saturated", "Fraction of outputs clipped to the range", "fraction")


class ClipConfig(BaseModel):
    limit: float = 0.05


class ClippedLinear(nc.ReplacedLinear):
    """Clips outputs to ±limit and counts, on the device, how many were clipped."""

    def __init__(self, source: nn.Module, limit: float) -> None:
        super().__init__(source)
        self.limit = limit
        self.register_buffer("counts", torch.zeros(2, device=source.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight_out_in(), self.bias)
        self.counts[0].add_((out.abs() > self.limit).sum())
        self.counts[1].add_(out.numel())
        return out.clamp(-self.limit, self.limit)


COUNTED = Statistic("counts", "Clipped and seen outputs", "count", (0.0, 1.0))


class ClipPlugin:
    broken = False
    vector = False

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("clip", "Clips outputs", ClipConfig, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return ClippedLinear(module, config.limit) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_statistics(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        if self.broken:
            return {Statistic("saturated", "", "fraction"): module.counts[0]}
        if self.vector:
            return {SATURATED: module.counts[0] / 2, COUNTED: module.counts}
        return {SATURATED: module.counts[0] / module.counts[1].clamp(min=1)}


@pytest.fixture
def clip_registry() -> nc.Registry:
    reg = nc.Registry()
    reg.register(ClipPlugin(), name="clip-plugin")
    return reg


def _seen_fraction(model: nn.Module, tokens: torch.Tensor, limit: float) -> dict[str, float]:
    """The clipped fraction per layer, computed independently from the exact outputs."""
    seen: dict[str, list[float]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, ClippedLinear):

            def hook(mod, args, out, _name=name):  # type: ignore[no-untyped-def]
                exact = nn.functional.linear(args[0], mod.weight_out_in(), mod.bias)
                seen[_name] = [float((exact.abs() > limit).sum()), float(exact.numel())]

            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(tokens)
    for handle in handles:
        handle.remove()
    return {name: hits / total for name, (hits, total) in seen.items()}


def test_saturation_fraction_matches_the_exact_outputs(clip_registry: nc.Registry) -> None:
    model = tiny()
    report = nc.apply(model, ["clip"], registry=clip_registry)
    tokens = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    expected = _seen_fraction(model, tokens, 0.05)
    stats = read_statistics(model, clip_registry)
    assert {s.layer for s in stats} == set(report.replaced)
    for s in stats:
        assert s.statistic == SATURATED and s.paradigm == "clip"
        assert s.value == pytest.approx(expected[s.layer])
        assert s.to_dict()["unit"] == "fraction"
    assert 0 < max(s.value for s in stats) < 1  # the limit clips some outputs, not all


def test_a_statistic_without_description_names_the_paradigm_and_layer(clip_registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["clip"], registry=clip_registry)
    ClipPlugin.broken = True
    try:
        with pytest.raises(nc.RunError, match=r"Paradigm 'clip' \(newcompute_statistics for '.*'\).*description"):
            read_statistics(model, clip_registry)
    finally:
        ClipPlugin.broken = False


def test_a_plugin_without_the_hook_reports_nothing(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["scale"], registry=registry)
    assert read_statistics(model, registry) == []


def test_a_vector_statistic_reads_back_as_a_list_in_bin_order(clip_registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["clip"], registry=clip_registry)
    tokens = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(tokens)
    ClipPlugin.vector = True
    try:
        stats = read_statistics(model, clip_registry)
    finally:
        ClipPlugin.vector = False
    layer = next(m for m in model.modules() if isinstance(m, ClippedLinear))
    vectors = [s for s in stats if s.statistic == COUNTED]
    assert vectors and all(isinstance(s.value, list) and len(s.value) == 2 for s in vectors)
    assert layer.counts.tolist() in [s.value for s in vectors]
    scalars = {s.layer: s.value for s in stats if s.statistic == SATURATED}
    assert all(scalars[s.layer] == s.value[0] / 2 for s in vectors)  # the flattened read keeps each in place
    assert vectors[0].to_dict()["bins"] == [0.0, 1.0]


def test_a_non_finite_value_names_the_paradigm_statistic_and_the_first_layer_holding_it(
    clip_registry: nc.Registry,
) -> None:
    model = tiny()
    nc.apply(model, ["clip"], registry=clip_registry)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, ClippedLinear)]
    (_, first), (second_name, second), (_, third) = layers[0], layers[1], layers[2]
    first.counts.copy_(torch.tensor([1.0, 4.0]))
    second.counts.copy_(torch.tensor([float("inf"), 0.0]))  # inf / 1: the only non-finite ratio
    third.counts.copy_(torch.tensor([float("nan"), 0.0]))
    ClipPlugin.vector = True
    try:
        with pytest.raises(nc.RunError) as raised:
            read_statistics(model, clip_registry)
    finally:
        ClipPlugin.vector = False
    message = str(raised.value)
    assert f"for '{second_name}'" in message and "Paradigm 'clip'" in message and "'saturated' = inf" in message
