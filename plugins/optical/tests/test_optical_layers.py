"""OpticalLinear and OpticalProduct on CPU: ranges, noise stream, bypass, state, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from newcompute_optical import OpticalLinear, ProductSettings, reference
from newcompute_optical.product import OpticalProduct


def _linear(bias: bool = True, seed: int = 0, **settings: object) -> tuple[nn.Linear, OpticalLinear]:
    torch.manual_seed(seed)
    source = nn.Linear(12, 7, bias=bias)
    return source, OpticalLinear(source, ProductSettings(**settings), "layer")


def _x(seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(seed)) * scale


def test_first_training_batch_sets_ranges_then_they_are_smoothed() -> None:
    source, layer = _linear()
    layer.train()
    x1, x2 = _x(1), _x(2, scale=3.0)
    layer(x1)
    optical = layer.optical
    assert optical.input_range.tolist() == [x1.min().item(), x1.max().item()]
    assert optical.weight_range.tolist() == [source.weight.min().item(), source.weight.max().item()]
    first_out = optical.output_range.clone()
    layer(x2)
    expected = torch.tensor([x1.min(), x1.max()]) + 0.1 * (torch.tensor([x2.min(), x2.max()]) - torch.tensor(
        [x1.min(), x1.max()]
    ))
    torch.testing.assert_close(optical.input_range, expected, rtol=0, atol=1e-6)
    assert not torch.equal(optical.output_range, first_out)
    assert optical.calls.item() == 2


def test_eval_freezes_ranges_but_advances_the_noise() -> None:
    _, layer = _linear()
    layer.train()
    layer(_x(1))
    frozen = [r.clone() for r in layer.optical.ranges()]
    layer.eval()
    first = layer(_x(2, scale=5.0))
    second = layer(_x(2, scale=5.0))
    assert all(torch.equal(a, b) for a, b in zip(frozen, layer.optical.ranges()))
    assert not torch.equal(first, second)
    assert layer.optical.calls.item() == 3


def test_eval_before_any_training_initialises_from_the_batch() -> None:
    _, layer = _linear()
    layer.eval()
    out = layer(_x(1))
    assert torch.isfinite(out).all()
    assert torch.isfinite(layer.optical.output_range).all()
    assert layer.optical.input_range.tolist() == [_x(1).min().item(), _x(1).max().item()]


def test_output_is_on_the_output_grid() -> None:
    _, layer = _linear(bias=False, q_levels=8)
    layer.train()
    out = layer(_x(1))
    lo, hi = layer.optical.output_range[0], layer.optical.output_range[1]
    grid = torch.arange(8, dtype=torch.float32) * ((hi - lo) / torch.tensor(7.0)) + lo
    assert torch.isin(torch.unique(out), grid).all()
    assert torch.unique(out).numel() > 4


def test_same_seed_and_state_reproduce_the_noise_and_other_seeds_do_not() -> None:
    outs = []
    for seed in (0, 0, 1):
        _, layer = _linear(q_init_seed=seed)
        layer.train()
        outs.append(layer(_x(1)))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_layers_with_the_same_seed_draw_independent_noise() -> None:
    torch.manual_seed(0)
    source = nn.Linear(12, 7)
    a = OpticalLinear(source, ProductSettings(), "model.layers.0.mlp.up_proj")
    b = OpticalLinear(source, ProductSettings(), "model.layers.1.mlp.up_proj")
    assert not torch.equal(a(_x(1)), b(_x(1)))


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_bypass_is_the_original_layer_exactly(kind: str) -> None:
    torch.manual_seed(0)
    source = nn.Linear(12, 7) if kind == "linear" else Conv1D(7, 12)
    layer = OpticalLinear(source, ProductSettings(q_bypass=True), "layer")
    x = _x(1)
    assert torch.equal(layer(x), source(x))
    assert layer.optical.calls.item() == 0


def test_conv1d_uses_the_transposed_weight() -> None:
    torch.manual_seed(0)
    conv = Conv1D(7, 12)
    linear = nn.Linear(12, 7)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    got = OpticalLinear(conv, ProductSettings(), "c")(_x(1))
    expected = OpticalLinear(linear, ProductSettings(), "c")(_x(1))
    assert torch.equal(got, expected)


def test_gradients_are_straight_through_with_quantized_operands() -> None:
    source, layer = _linear(q_levels=16)
    layer.train()
    x = _x(1).requires_grad_(True)
    x_range = torch.stack([x.min(), x.max()]).detach()
    w_range = torch.stack([source.weight.min(), source.weight.max()]).detach()
    out = layer(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    xq = reference.quantize(x.detach(), x_range, 16).reshape(-1, 12)
    wq = reference.quantize_weight(source.weight.detach(), w_range, 16, 0.020040)
    g = grad.reshape(-1, 7)
    torch.testing.assert_close(x.grad.reshape(-1, 12), g @ wq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(source.weight.grad, g.T @ xq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(source.bias.grad, g.sum(0), rtol=1e-5, atol=1e-6)
    assert (x.grad.reshape(-1, 12) - g @ source.weight.detach()).abs().max() > 1e-3


def test_ranges_and_counter_survive_a_state_dict_round_trip() -> None:
    source, layer = _linear()
    layer.train()
    for seed in (1, 2, 3):
        layer(_x(seed))
    state = layer.state_dict()
    assert set(state) == {
        "weight", "bias", "optical.input_range", "optical.weight_range", "optical.output_range", "optical.calls",
    }
    _, fresh = _linear(seed=5)
    fresh.load_state_dict(state)
    layer.eval()
    fresh.eval()
    assert torch.equal(layer(_x(9)), fresh(_x(9)))


def test_ranges_stay_fp32_when_the_model_is_cast() -> None:
    _, layer = _linear()
    layer.train()
    layer(_x(1))
    kept = layer.optical.input_range.clone()
    layer.to(torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16
    assert layer.optical.input_range.dtype == torch.float32
    assert torch.equal(layer.optical.input_range, kept)
    assert layer.optical.stats.dtype == torch.float32
    assert layer(_x(1).to(torch.bfloat16)).dtype == torch.bfloat16


def test_state_leaving_the_meta_device_starts_unset() -> None:
    with torch.device("meta"):
        source = nn.Linear(12, 7)
    layer = OpticalLinear(source, ProductSettings(), "layer")
    layer.to_empty(device="cpu")
    assert layer.optical.input_range.tolist() == [float("inf"), float("-inf")]
    assert layer.optical.calls.item() == 0


def test_autocast_runs_the_product_in_the_autocast_dtype() -> None:
    _, layer = _linear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(_x(1))
    assert out.dtype == torch.bfloat16


def test_product_module_matches_the_reference_call() -> None:
    settings = ProductSettings(q_levels=32)
    product = OpticalProduct(settings, "p")
    product.train()
    a = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    out = product(a, b, None, torch.float32)
    ranges = tuple(torch.tensor([t.min(), t.max()]) for t in (a, b))
    aq = reference.quantize(a, ranges[0], 32)
    bq = reference.quantize_weight(b, ranges[1], 32, settings.q_lut_min)
    exact = aq @ bq.transpose(1, 2)
    out_range = torch.stack([exact.min(), exact.max()])
    key = (0, product.stream)
    expected, *_ = reference.product(a, b, None, (*ranges, out_range), 32, settings.q_lut_min, key, torch.tensor(0),
                                     torch.float32)
    assert torch.equal(out, expected)
