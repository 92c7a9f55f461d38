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


def _attention_statistics(matmuls: nn.Module) -> dict[str, float]:
    return {stat.name: value.item() for stat, value in plugin.newcompute_statistics(module=matmuls).items()}


def test_sampled_attention_statistics_match_the_two_products_measured_one_by_one() -> None:
    """What fused attention's sampled measurement reports, at stride 1, is what the unfused products report."""
    from newcompute_optical.attention import OpticalAttentionMatmuls

    torch.manual_seed(0)
    query, key, value = torch.randn(2, 4, 8, 16), torch.randn(2, 2, 8, 16), torch.randn(2, 2, 8, 16)
    scale, causal = 16**-0.5, torch.ones(8, 8, dtype=torch.bool).tril()
    matmuls = OpticalAttentionMatmuls(ProductSettings(), "attn").eval()

    def unfused() -> None:
        keys, values = key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1)
        scores = (matmuls.qk(query, keys) * scale).masked_fill(~causal, torch.finfo(torch.float32).min)
        matmuls.pv(torch.softmax(scores, dim=-1, dtype=torch.float32), values)

    unfused()  # calibrates the ranges, which eval mode then keeps
    calls = (matmuls.scores.calls.item(), matmuls.context.calls.item())
    with nc.collect_statistics():
        matmuls.observe_sampled(query, key, value, scale, causal=True)
    sampled = _attention_statistics(matmuls)
    assert (matmuls.scores.calls.item(), matmuls.context.calls.item()) == calls  # the noise counter stays
    for product in (matmuls.scores, matmuls.context):
        product.telemetry.reset()
    with nc.collect_statistics():
        unfused()
    assert sampled == pytest.approx(_attention_statistics(matmuls), rel=1e-5, abs=1e-9)
    assert sampled["qk_readout_noise_to_signal"] > 0 and sampled["pv_input_range_use"] > 0

    for product in (matmuls.scores, matmuls.context):
        product.telemetry.reset()
    with nc.collect_statistics(row_stride=2):
        matmuls.observe_sampled(query, key, value, scale, causal=True)
    # 2 × 4 heads, query rows 0, 2, 4, 6 against 8 keys; the context product's outputs are those rows × 16.
    assert matmuls.scores.telemetry["outputs"].item() == 8 * 4 * 8
    assert matmuls.context.telemetry["outputs"].item() == 8 * 4 * 16


def test_a_measured_call_reuses_the_products_quantized_operands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring quantizes nothing again: the statistics take the operands the product quantized."""
    from newcompute_optical import reference

    calls = {"quantize": 0}
    quantize = reference.quantize

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls["quantize"] += 1
        return quantize(*args, **kwargs)

    monkeypatch.setattr(reference, "quantize", counted)
    layer = _layer().train()
    x = torch.randn(6, 2)
    layer(x)  # the first call after construction also calibrates, which quantizes too
    before = calls["quantize"]
    layer(x)
    plain = calls["quantize"] - before
    with nc.collect_statistics(row_stride=2):
        layer(x)
    assert plain == 2 and calls["quantize"] - before == 2 * plain
    assert layer.optical.telemetry["calls"].item() == 1 and layer.optical.telemetry["outputs"].item() == 3 * 2


def test_range_use_is_taken_with_the_ranges_the_call_quantized_with() -> None:
    """In training the call folds the batch into its ranges; range use still compares against the ranges before."""
    layer = _layer().train()
    with nc.collect_statistics():
        layer(X)
    assert not torch.equal(layer.optical.input_range, torch.tensor([-2.0, 2.0]))  # the fold moved it
    stats = _stats(layer)
    assert stats["input_range_use"] == pytest.approx(0.5)  # [-1, 1] of the [-2, 2] that quantized X
    assert stats["readout_clip_rate"] == pytest.approx(5 / 8)
