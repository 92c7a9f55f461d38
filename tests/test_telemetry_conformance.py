"""The conformance suite's statistics checks: a correct reporter passes, each broken one is caught."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn import functional as F

import newcompute as nc
from newcompute.testing import ConformanceFailure, ConformanceSpec, check_statistics, check_statistics_leave_outputs

CLIPPED = nc.Statistic("clip_rate", "Fraction of outputs clipped to ±1", "fraction")


class ClipConfig(BaseModel):
    limit: float = Field(1.0, gt=0.0, description="Outputs are clamped to ±limit.")


class ClipLinear(nc.ReplacedLinear):
    always = False  # accumulate even while collection is off
    perturb = False  # let collection change the output

    def __init__(self, source: nn.Module, limit: float) -> None:
        super().__init__(source)
        self.limit = limit
        self.telemetry = nc.StatisticSums(["clipped", "seen"], source.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight_out_in(), self.bias)
        if nc.collecting_statistics() or self.always:
            self.telemetry.add("clipped", (out.abs() > self.limit).sum())
            self.telemetry.add("seen", out.numel())
            if self.perturb:
                out = out * 1.001
        return out.clamp(-self.limit, self.limit)


class ClipPlugin:
    newcompute_api = ">=1.0,<2"
    statistic = CLIPPED
    value = staticmethod(lambda module: module.telemetry.ratio("clipped", "seen"))

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("clip", "Clipped linear outputs", ClipConfig, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return ClipLinear(module, config.limit) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_statistics(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return {self.statistic: self.value(module)}


def _spec(plugin: object) -> ConformanceSpec:
    return ConformanceSpec(plugin=plugin, paradigm="clip", families=("tiny",))


def test_a_correct_reporter_passes() -> None:
    check_statistics(_spec(ClipPlugin()))
    check_statistics_leave_outputs(_spec(ClipPlugin()))


def test_accumulating_while_collection_is_off_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ClipLinear, "always", True)
    with pytest.raises(ConformanceFailure, match="accumulated statistics while collection was off"):
        check_statistics(_spec(ClipPlugin()))


def test_a_name_that_is_not_snake_case_is_caught() -> None:
    plugin = ClipPlugin()
    plugin.statistic = nc.Statistic("Clip Rate", "Fraction clipped", "fraction")
    with pytest.raises(ConformanceFailure, match="'Clip Rate' .* is not snake_case"):
        check_statistics(_spec(plugin))


def test_a_missing_description_and_an_off_device_value_are_caught() -> None:
    plugin = ClipPlugin()
    plugin.statistic = nc.Statistic("clip_rate", " ", "fraction")
    with pytest.raises(ConformanceFailure, match="description and unit"):
        check_statistics(_spec(plugin))
    plugin = ClipPlugin()
    plugin.value = staticmethod(lambda module: torch.tensor(0.5, device="meta"))
    with pytest.raises(ConformanceFailure, match="is on meta, not the module's device cpu"):
        check_statistics(_spec(plugin))


def test_a_non_finite_value_is_caught() -> None:
    plugin = ClipPlugin()
    plugin.value = staticmethod(lambda module: module.telemetry["clipped"] / 0.0 + float("nan"))
    with pytest.raises(ConformanceFailure, match="must be finite"):
        check_statistics(_spec(plugin))


def test_collection_that_changes_the_output_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ClipLinear, "perturb", True)
    with pytest.raises(ConformanceFailure, match="output changes while statistics are collected"):
        check_statistics_leave_outputs(_spec(ClipPlugin()))


HISTOGRAM = nc.Statistic("clip_histogram", "Outputs per clipped sign", "count", (-1.0, 1.0))


def test_a_histogram_statistic_passes_and_its_shape_and_bins_are_checked() -> None:
    plugin = ClipPlugin()
    plugin.statistic = HISTOGRAM
    plugin.value = staticmethod(lambda module: torch.stack([module.telemetry["clipped"], module.telemetry["seen"]]))
    check_statistics(_spec(plugin))
    plugin.value = staticmethod(lambda module: module.telemetry["clipped"])
    with pytest.raises(ConformanceFailure, match="must be a 1-D floating tensor of 2 entries"):
        check_statistics(_spec(plugin))
    plugin.statistic = nc.Statistic("clip_histogram", "Outputs per clipped sign", "count", (1.0, -1.0))
    plugin.value = staticmethod(lambda module: torch.stack([module.telemetry["clipped"], module.telemetry["seen"]]))
    with pytest.raises(ConformanceFailure, match="strictly increasing"):
        check_statistics(_spec(plugin))
    plugin.statistic = HISTOGRAM
    plugin.value = staticmethod(lambda module: torch.stack([-module.telemetry["seen"], module.telemetry["seen"]]))
    with pytest.raises(ConformanceFailure, match="negative count"):
        check_statistics(_spec(plugin))
