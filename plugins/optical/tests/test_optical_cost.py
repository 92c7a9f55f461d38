"""The optical cost estimate: operand bytes from q_levels; energy and throughput deliberately left out."""

from __future__ import annotations

import pytest

from newcompute import MatmulShape
from newcompute_optical import OpticalConfig
from newcompute_optical.cost import estimate


def test_bytes_follow_the_levels_and_the_digital_backward_and_energy_is_not_guessed() -> None:
    linear = MatmulShape("model.layers.0.mlp.up_proj", "linear", 8, 4, 32)
    attention = MatmulShape("model.layers.0.self_attn", "attention", 2, 4, 96)
    config = OpticalConfig.model_validate({"fc": {"q_levels": 256}, "attention": {"q_levels": 100}})
    cost = estimate(config, [linear, attention])
    fc = (8 / 16 + 1 + 1) / 3  # 256 levels: 8 bits forward; the straight-through backward stays at 16 bits
    attn = (7 / 16 + 1 + 1) / 3  # 100 levels need 7 bits
    assert cost.bytes_moved_vs_bf16 == pytest.approx((32 * fc + 96 * attn) / 128)
    assert cost.matmul_energy_vs_bf16 is None and cost.matmul_throughput_vs_bf16 is None
    assert "2302.10360" in cost.notes
    bypass = estimate(OpticalConfig.model_validate({"fc": {"q_bypass": True}}), [linear])
    assert bypass.bytes_moved_vs_bf16 == pytest.approx(1.0)
