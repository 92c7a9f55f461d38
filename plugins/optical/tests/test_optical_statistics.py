"""The optical statistics against a hand-computed product: a half-used range, a known clip rate and noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import newcompute as nc
from newcompute_optical import plugin
from newcompute_optical.config import OpticalConfig, ProductSettings
from newcompute_optical.layer import OpticalLinear


def _layer() -> OpticalLinear:
    source = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        source.weight.copy_(torch.eye(2))
    # 5 levels: the input grid over [-2, 2] has step 1, the weight grid over [0, 1] step 0.25, so both are exact.
    layer = OpticalLinear(source, ProductSettings(q_levels=5, q_lut_min=0.0), "layer").eval()
    product = layer.optical
    with torch.no_grad():
        product.input_range.copy_(torch.tensor([-2.0, 2.0]))
        product.weight_range.copy_(torch.tensor([0.0, 1.0]))
        product.output_range.copy_(torch.tensor([-0.5, 0.5]))
    return layer


def _stats(module: nn.Module) -> dict[str, float]:
    return {stat.name: value.item() for stat, value in plugin.newcompute_statistics(module=module).items()}


X = torch.tensor([[-1.0, 1.0], [0.0, 1.0], [1.0, -1.0], [0.0, 0.0]])


def test_hand_computed_range_use_clip_rate_and_noise() -> None:
    layer = _layer()
    with nc.collect_statistics():
        out = layer(X)
    # The identity weight makes the product X itself; the read-out clamps it to ±0.5 (5 of its 8 values).
    assert torch.equal(out, X.clamp(-0.5, 0.5))
    stats = _stats(layer)
    assert stats["input_range_use"] == pytest.approx(0.5)  # X spans [-1, 1] of [-2, 2]
    assert stats["weight_range_use"] == pytest.approx(1.0)
    assert stats["output_range_use"] == pytest.approx(1.0)  # [-1, 1] covers all of [-0.5, 0.5]
    assert stats["readout_clip_rate"] == pytest.approx(5 / 8)
    # Each clipped value loses 0.5: 5 · 0.25 of error power over Σx² = 5.
    assert stats["readout_noise_to_signal"] == pytest.approx(0.25)


def test_a_row_stride_takes_the_product_on_every_nth_row_and_the_range_on_all() -> None:
    layer = _layer()
    with nc.collect_statistics(row_stride=2):
        layer(X)
    stats = _stats(layer)
    # Rows 0 and 2, [-1, 1] and [1, -1]: all four values clip, each losing 0.5 (error 4 · 0.25 over Σx² = 4).
    assert stats["readout_clip_rate"] == pytest.approx(1.0)
    assert stats["readout_noise_to_signal"] == pytest.approx(0.25)
    assert layer.optical.telemetry["outputs"].item() == 4
    assert stats["input_range_use"] == pytest.approx(0.5)  # still all of X: [-1, 1] of [-2, 2]


def test_nothing_is_measured_while_collection_is_off() -> None:
    layer = _layer()
    layer(X)
    assert torch.count_nonzero(layer.optical.telemetry.sums) == 0
    assert all(value == 0 for value in _stats(layer).values())


def test_a_transformed_model_reports_every_layer_and_both_attention_products() -> None:
    from newcompute.testing import build_tiny, sample_batch

    model = build_tiny()
    report = nc.apply(model, OpticalConfig())
    tokens = sample_batch()
    with torch.no_grad(), nc.collect_statistics():
        model(tokens)
    stats = nc.read_statistics(model)
    layers = {s.layer for s in stats}
    assert layers == set(report.replaced) | set(report.attention["optical"])
    names = {s.statistic.name for s in stats}
    assert {"readout_clip_rate", "qk_readout_clip_rate", "pv_input_range_use"} <= names
    for s in stats:
        if s.statistic.unit == "fraction":
            assert 0.0 <= s.value <= 1.0, s
    # The first batch calibrated every range from itself, so inputs span them entirely.
    assert all(s.value == pytest.approx(1.0) for s in stats if s.statistic.name == "input_range_use")
