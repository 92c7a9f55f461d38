"""BitFlipLinear's wiring: which operands flip, in which layout and format, and how the counter advances."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

import newcompute as nc
from newcompute_bitflip.config import BitFlipConfig, halves
from newcompute import layer_stream
from newcompute_bitflip.layer import BitFlipLinear
from newcompute_bitflip.reference import FlipSpec, flip_bits

NOISY = BitFlipConfig(x_p_exp=2**-5, x_p_frac=2**-2, w_p_exp=2**-4, w_p_frac=2**-3, x_zero_out_t=4.0, w_zero_out_t=0.5)


def expected_output(
    layer: BitFlipLinear, x: torch.Tensor, stored_weight: torch.Tensor, bias: torch.Tensor | None, call: int
) -> torch.Tensor:
    """Input and stored weight flipped by the reference with the layer's documented streams."""
    counter = torch.tensor(call)
    x_flipped, _ = flip_bits(x, counter, layer.inputs)
    w_flipped, _ = flip_bits(stored_weight, counter, layer.weights)
    weight = w_flipped.t() if layer.weight_transposed else w_flipped
    return F.linear(x_flipped, weight, bias)


def test_probabilities_round_down_to_powers_of_two() -> None:
    assert [halves(p) for p in (0.0, 0.5, 0.3, 0.25, 2**-16, 1e-3)] == [0, 1, 2, 2, 16, 10]


def test_streams_follow_the_config_and_layer_name() -> None:
    layer = BitFlipLinear(nn.Linear(4, 3), NOISY.model_copy(update={"seed": 11}), "model.layers.0.mlp.up_proj")
    key = (11, layer_stream("model.layers.0.mlp.up_proj"))
    assert layer.inputs == FlipSpec(5, 2, 0, 1, 4.0, key)
    assert layer.weights == FlipSpec(4, 3, 2, 3, 0.5, key)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_forward_flips_input_and_stored_weight_then_multiplies(kind: str) -> None:
    torch.manual_seed(0)
    source = nn.Linear(16, 8) if kind == "linear" else Conv1D(8, 16)
    nn.init.normal_(source.weight, std=0.3)
    layer = BitFlipLinear(source, NOISY, "block.fc")
    x = torch.randn(3, 16)
    for call in range(3):
        expected = expected_output(layer, x, source.weight, source.bias, call)
        assert torch.equal(layer(x), expected)
    assert int(layer.bitflip_calls) == 3


def test_restored_counter_replays_the_same_faults() -> None:
    torch.manual_seed(0)
    layer = BitFlipLinear(nn.Linear(16, 8), NOISY, "fc")
    x = torch.randn(2, 16)
    layer(x)
    saved = {k: v.clone() for k, v in layer.state_dict().items()}
    second = layer(x)
    restored = BitFlipLinear(nn.Linear(16, 8), NOISY, "fc")
    restored.load_state_dict(saved)
    assert torch.equal(restored(x), second)


def test_autocast_flips_the_bfloat16_operands() -> None:
    torch.manual_seed(0)
    source = nn.Linear(16, 8)
    layer = BitFlipLinear(source, NOISY, "fc")
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    expected = expected_output(
        layer, x.to(torch.bfloat16), source.weight.to(torch.bfloat16), source.bias.to(torch.bfloat16), 0
    )
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_weight_gradient_is_straight_through_except_for_zeroed_weights() -> None:
    source = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        source.weight.copy_(torch.tensor([[0.25, 0.75]]))
    config = BitFlipConfig(x_p_exp=0, x_p_frac=0, w_p_exp=0, w_p_frac=0, x_zero_out_t=0, w_zero_out_t=0.5)
    layer = BitFlipLinear(source, config, "fc")
    out = layer(torch.tensor([[2.0, 3.0]]))
    assert out.item() == 0.5
    out.sum().backward()
    assert source.weight.grad.tolist() == [[2.0, 0.0]]


def test_unsupported_dtype_is_refused_with_the_valid_formats() -> None:
    layer = BitFlipLinear(nn.Linear(4, 2).double(), NOISY, "fc")
    with pytest.raises(nc.ConfigError, match="float64.*float32, bfloat16, float16"):
        layer(torch.randn(1, 4, dtype=torch.float64))


def test_statistics_count_the_elements_the_flips_changed() -> None:
    from newcompute_bitflip.plugin import newcompute_statistics

    config = BitFlipConfig(x_p_exp=0.0, x_p_frac=0.5, w_p_exp=0.0, w_p_frac=0.0, x_zero_out_t=0.0)
    layer = BitFlipLinear(nn.Linear(8, 4), config, "layer")
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with nc.collect_statistics():
        for call in range(2):
            layer(x)
    flipped = [flip_bits(x, torch.tensor(call), layer.inputs)[0] for call in range(2)]
    expected = sum(int((f.view(torch.int32) != x.view(torch.int32)).sum()) for f in flipped)
    stats = {stat.name: value.item() for stat, value in newcompute_statistics(module=layer).items()}
    assert expected > 0
    assert stats["input_flips_per_call"] == pytest.approx(expected / 2)
    assert stats["input_flip_rate"] == pytest.approx(expected / (2 * x.numel()))
    assert stats["weight_flips_per_call"] == 0 and stats["weight_flip_rate"] == 0  # weights never flip


def test_statistics_measure_nothing_while_collection_is_off() -> None:
    layer = BitFlipLinear(nn.Linear(8, 4), NOISY, "layer")
    layer(torch.randn(3, 8))
    assert torch.count_nonzero(layer.telemetry.sums) == 0
