"""The bitflip cost estimate: the baseline's own bf16 products with faults, so every ratio is 1.0 by construction."""

from __future__ import annotations

import newcompute as nc
from newcompute_bitflip.config import BitFlipConfig
from newcompute_bitflip.plugin import newcompute_estimate_cost


def test_bitflip_costs_what_bf16_costs_and_cites_no_constant() -> None:
    cost = newcompute_estimate_cost(BitFlipConfig())
    assert isinstance(cost, nc.CostEstimate) and cost.scope == "layers"
    assert (cost.matmul_energy_vs_bf16, cost.bytes_moved_vs_bf16, cost.matmul_throughput_vs_bf16) == (1.0, 1.0, 1.0)
    assert cost.sources == () and "By construction" in cost.notes


def test_the_config_takes_figures_of_ones_own() -> None:
    config = BitFlipConfig.model_validate({"cost": {"matmul_energy_vs_bf16": 0.5}})
    assert config.cost.matmul_energy_vs_bf16 == 0.5 and config.cost.matmul_throughput_vs_bf16 is None
