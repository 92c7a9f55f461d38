"""Cost estimates beside the loss: the hook, how paradigms combine, overrides, and the run's summary."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, Field
from rich.console import Console
from torch import nn

import newcompute as nc
from newcompute.costs import LABEL, estimate_costs, model_matmuls
from newcompute.study.results import as_csv, run_results
from newcompute.train import train
from test_train_paradigms import tiny_run
from conftest import tiny


class CheapConfig(BaseModel):
    energy: float | None = 0.25
    cost: nc.CostOverrides = Field(default_factory=nc.CostOverrides)


class Passthrough(nc.ReplacedLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight_out_in(), self.bias)


class CostPlugin:
    """'cheap' (layers at a quarter of the energy, half the bytes, 4× throughput) and 'slow' (optimizer: ×1.5)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict] = {}

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [
            nc.Paradigm("cheap", "Cheap linear layers", CheapConfig, frozenset({nc.Role.LAYER})),
            nc.Paradigm("slow", "An optimizer with extra work", CheapConfig, frozenset({nc.Role.OPTIMIZER})),
        ]

    @nc.hookimpl
    def newcompute_replace_layer(self, module: nn.Module) -> nn.Module | None:
        return Passthrough(module) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_build_optimizer(self, params: list[nc.ParamInfo], settings: nc.OptimizerSettings):
        return torch.optim.SGD([p.param for p in params], lr=settings.lr)

    @nc.hookimpl
    def newcompute_estimate_cost(self, paradigm, config, layers, model_macs_per_token, tokens, tokens_per_step):
        self.seen[paradigm.name] = {"layers": layers, "macs": model_macs_per_token, "tokens": tokens}
        if paradigm.name == "slow":
            return nc.CostEstimate(1.5, 1.5, 1 / 1.5, scope="run", sources=("test figure",))
        return nc.CostEstimate(config.energy, 0.5, 4.0, sources=("test figure",), notes="a test")


@pytest.fixture
def cost_registry() -> tuple[nc.Registry, CostPlugin]:
    registry = nc.Registry()
    plugin = CostPlugin()
    registry.register(plugin, name="cost-plugin")
    return registry, plugin


def test_the_model_matmuls_count_linear_layers_and_attention_at_the_block_size() -> None:
    model = tiny()
    shapes = {s.name: s for s in model_matmuls(model, block_size=32)}
    config = model.config
    up = shapes["model.layers.0.mlp.up_proj"]
    assert (up.rows, up.cols, up.macs_per_token) == (config.intermediate_size, config.hidden_size,
                                                     config.intermediate_size * config.hidden_size)
    attention = shapes["model.layers.0.self_attn"]
    head_dim = config.hidden_size // config.num_attention_heads
    assert attention.macs_per_token == 2 * 32 * config.num_attention_heads * head_dim  # Q·Kᵀ and P·V over the block


def test_estimates_combine_by_share_of_macs_and_an_optimizer_factor_multiplies(cost_registry) -> None:
    registry, plugin = cost_registry
    model = tiny()
    report = nc.apply(model, ["cheap", "slow"], registry=registry)
    nc.build_optimizer(model, nc.OptimizerSettings(lr=0.1), registry=registry)
    costs = estimate_costs(model, report, registry, tokens=640, tokens_per_step=64, block_size=32)
    shapes = model_matmuls(model, 32)
    total = sum(s.macs_per_token for s in shapes)
    share = sum(s.macs_per_token for s in shapes if s.name in report.replaced) / total
    assert 0 < share < 1  # the head and attention stay in bf16
    assert costs.paradigms["cheap"]["share_of_macs"] == pytest.approx(share)
    assert costs.total["matmul_energy_vs_bf16"] == pytest.approx(((1 - share) + share * 0.25) * 1.5)
    assert costs.total["bytes_moved_vs_bf16"] == pytest.approx(((1 - share) + share * 0.5) * 1.5)
    assert costs.total["matmul_throughput_vs_bf16"] == pytest.approx(1 / ((1 - share) + share / 4) / 1.5)
    assert plugin.seen["cheap"]["macs"] == total and plugin.seen["cheap"]["tokens"] == 640
    assert {s.kind for s in plugin.seen["slow"]["layers"]} == {"matrix"}
    assert costs.to_dict()["label"] == LABEL


def test_a_figure_left_out_leaves_the_total_out_and_the_config_overrides_a_figure(cost_registry) -> None:
    registry, _ = cost_registry
    model = tiny()
    report = nc.apply(model, [("cheap", {"energy": None})], registry=registry)
    costs = estimate_costs(model, report, registry, tokens=64, tokens_per_step=64, block_size=32)
    assert costs.total["matmul_energy_vs_bf16"] is None and costs.total["bytes_moved_vs_bf16"] is not None
    assert "not estimated" in costs.lines()[0]
    model = tiny()
    report = nc.apply(model, [("cheap", {"energy": None, "cost": {"matmul_energy_vs_bf16": 0.1}})], registry=registry)
    costs = estimate_costs(model, report, registry, tokens=64, tokens_per_step=64, block_size=32)
    assert costs.paradigms["cheap"]["matmul_energy_vs_bf16"] == 0.1
    assert costs.paradigms["cheap"]["overridden_in_config"] == ["matmul_energy_vs_bf16"]
    with pytest.raises(nc.ConfigError, match="cost.matmul_energy_vs_bf16"):
        nc.apply(tiny(), [("cheap", {"cost": {"matmul_energy_vs_bf16": -1}})], registry=registry)


def test_a_finished_run_records_and_shows_its_estimates_labelled(tmp_path: Path) -> None:
    output = io.StringIO()
    run = tiny_run(tmp_path / "run", {"optical": {}}, steps=2, eval_every=100)
    train(run, console=Console(file=output, width=200))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    costs = summary["cost_estimates"]
    assert costs["label"] == LABEL and costs["total"]["matmul_energy_vs_bf16"] is None
    assert 0 < costs["total"]["bytes_moved_vs_bf16"] < 1
    assert f"Estimated bytes moved: {costs['total']['bytes_moved_vs_bf16']:.3g} × bf16 ({LABEL})" in output.getvalue()
    assert "Estimated matmul energy: not estimated" in output.getvalue()
    exported = as_csv(run_results([tmp_path / "run"]))
    header, row = exported.splitlines()
    assert "estimated_bytes_moved_vs_bf16" in header.split(",")
    assert str(costs["total"]["bytes_moved_vs_bf16"]) in row.split(",")
