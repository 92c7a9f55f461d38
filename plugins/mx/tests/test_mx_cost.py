"""The MX and FP8 cost estimates, recomputed by hand from the cited figures."""

from __future__ import annotations

import pytest

from newcompute import MatmulShape
from newcompute_mx import FP8Config, Mxfp4Config, Mxfp8Config, MxInt8Config
from newcompute_mx.cost import estimate

LINEAR = [MatmulShape("model.layers.0.mlp.up_proj", "linear", 128, 64, 128 * 64)]


def test_mxfp8_operands_are_8_bits_plus_a_shared_8_bit_scale_per_32_and_run_at_twice_bf16() -> None:
    cost = estimate(Mxfp8Config(), LINEAR)
    # Every role is E4M3 or E5M2: 8 bits + 8/32 scale bits, against bf16's 16 (OCP MX v1.0).
    assert cost.bytes_moved_vs_bf16 == pytest.approx(8.25 / 16)
    # HGX B200 datasheet: FP8 9 PFLOPS against BF16 4.5 (sparse), one board power for both.
    assert cost.matmul_throughput_vs_bf16 == pytest.approx(2.0)
    assert cost.matmul_energy_vs_bf16 == pytest.approx(0.5)
    assert any("OCP Microscaling" in s for s in cost.sources) and any("B200" in s for s in cost.sources)


def test_mxfp4_weights_with_fp6_activations_run_at_the_fp6_rate() -> None:
    cost = estimate(Mxfp4Config(), LINEAR)
    # Weights (fwd_weight, dgrad_weight) E2M1: 4 + 0.25 bits; the other four roles E3M2: 6 + 0.25 bits.
    assert cost.bytes_moved_vs_bf16 == pytest.approx((2 * 4.25 + 4 * 6.25) / 6 / 16)
    assert cost.matmul_throughput_vs_bf16 == pytest.approx(9.0 / 4.5)  # every GEMM has an FP6 operand


def test_fp8_uses_the_h100_rates_and_mxint8_has_no_rate() -> None:
    fp8 = estimate(FP8Config(), LINEAR)
    assert fp8.bytes_moved_vs_bf16 == pytest.approx(0.5)  # per-tensor scales: 8 bits per element
    assert fp8.matmul_throughput_vs_bf16 == pytest.approx(1978.9 / 989.4)
    assert any("H100" in s for s in fp8.sources)
    int8 = estimate(MxInt8Config(), LINEAR)
    assert int8.matmul_energy_vs_bf16 is None and int8.matmul_throughput_vs_bf16 is None
    assert "MXINT8 has no tensor-core rate" in int8.notes


def test_a_role_left_in_bf16_runs_its_gemm_at_the_bf16_rate() -> None:
    config = Mxfp8Config(dgrad_grad_output="none", wgrad_grad_output="none")
    cost = estimate(config, LINEAR)
    # Forward at 2× bf16, both backward GEMMs at 1×: time per MAC (1/2 + 1 + 1) / 3.
    assert cost.matmul_throughput_vs_bf16 == pytest.approx(3 / 2.5)
    assert cost.bytes_moved_vs_bf16 == pytest.approx((4 * 8.25 + 2 * 16) / 6 / 16)
