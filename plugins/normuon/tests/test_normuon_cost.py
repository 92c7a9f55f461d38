"""NorMuon's cost estimate: the Newton–Schulz multiply-accumulates per step against the training ones."""

from __future__ import annotations

import pytest

from newcompute import MatmulShape
from newcompute_normuon import NorMuonConfig
from newcompute_normuon.cost import estimate, newton_schulz_macs


def test_newton_schulz_adds_its_products_per_step_as_a_factor_on_the_run() -> None:
    # One iteration on a 4 × 8 matrix: X·Xᵀ 4·4·8, A·A 4·4·4, B·X 4·4·8 multiply-accumulates; tall or wide
    # alike.
    assert newton_schulz_macs(4, 8, 1) == newton_schulz_macs(8, 4, 1) == 128 + 64 + 128
    matrices = [MatmulShape("a.weight", "matrix", 4, 8, 0), MatmulShape("b.weight", "matrix", 8, 8, 0)]
    cost = estimate(NorMuonConfig(ns_steps=3), matrices, model_macs_per_token=100, tokens_per_step=64)
    extra = 3 * (320 + (2 * 64 * 8 + 512)) / (3 * 100 * 64)  # training: forward + two backward per forward MAC
    assert cost.scope == "run"
    assert cost.matmul_energy_vs_bf16 == pytest.approx(1 + extra)
    assert cost.matmul_throughput_vs_bf16 == pytest.approx(1 / (1 + extra))
    assert cost.bytes_moved_vs_bf16 is None and any("2510.05491" in s for s in cost.sources)
