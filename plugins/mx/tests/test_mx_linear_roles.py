"""The six operand roles: each GEMM of a replaced layer sees exactly the operands its config names.

Expected results are built by hand from the reference quantizer and plain
matmuls in the same order and layout, so equality is exact; the recorded
operands are inspected to see which tensors were quantized, in what format
and along which axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from newcompute_mx import reference
from newcompute_mx.attention import QuantizedAttentionMatmuls
from newcompute_mx.config import ROLES
from newcompute_mx.formats import FORMATS
from newcompute_mx.fp8_scaling import TensorKind
from newcompute_mx.layer import QuantizedLinear
from newcompute_mx.quantizers import MXQuantizer, Pair, PairRequest

NONE = dict.fromkeys(ROLES, "none")


class RecordingQuantizer(MXQuantizer):
    """An MXQuantizer that keeps every operand it hands out, by tensor kind."""

    def __init__(self, formats: dict[str, str]) -> None:
        super().__init__(formats, block_size=32, scale_mode="floor")
        self.seen: dict[TensorKind, Pair] = {}

    def pairs(self, requests: Sequence[PairRequest], dtype: torch.dtype) -> list[Pair]:
        results = super().pairs(requests, dtype)
        self.seen.update((kind, result) for (kind, *_), result in zip(requests, results))
        return results


def fq(x: torch.Tensor, fmt: str, axis: int) -> torch.Tensor:
    return x if fmt == "none" else reference.mx_fake_quantize(x, FORMATS[fmt], 32, axis, "floor").contiguous()


def make_layer(formats: dict[str, str], seed: int = 0) -> tuple[nn.Linear, QuantizedLinear, RecordingQuantizer]:
    torch.manual_seed(seed)
    source = nn.Linear(96, 64, bias=True)
    quantizer = RecordingQuantizer(formats)
    return source, QuantizedLinear(source, quantizer), quantizer


def run(layer: nn.Module, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 40, 96, generator=generator).requires_grad_(True)
    grad = torch.randn(2, 40, 64, generator=generator)
    out = layer(x)
    out.backward(grad)
    return x, grad, out


MIXED = {
    "fwd_input": "e4m3",
    "fwd_weight": "e2m1",
    "dgrad_grad_output": "e5m2",
    "dgrad_weight": "int8",
    "wgrad_grad_output": "e3m2",
    "wgrad_input": "e2m3",
}


def test_all_three_gemms_use_their_own_quantized_operands() -> None:
    source, layer, _ = make_layer(MIXED)
    x, grad, out = run(layer)
    a, g, w = x.detach().reshape(80, 96), grad.reshape(80, 64), source.weight.detach()

    y = torch.matmul(fq(a, "e4m3", -1), fq(w, "e2m1", -1).transpose(-1, -2)).reshape(2, 40, 64) + source.bias
    dx = torch.matmul(fq(g, "e5m2", -1), fq(w, "int8", -2)).reshape(2, 40, 96)
    dw = torch.matmul(fq(g, "e3m2", -2).transpose(-1, -2), fq(a, "e2m3", -2))
    assert torch.equal(out, y)
    assert torch.equal(x.grad, dx)
    assert torch.equal(source.weight.grad, dw)
    assert torch.equal(source.bias.grad, grad.sum((0, 1)))


@pytest.mark.parametrize("role", list(ROLES))
def test_one_quantized_role_changes_only_its_operand(role: str) -> None:
    _, layer, quantizer = make_layer(NONE | {role: "e2m1"})
    x, grad, _ = run(layer)
    raw = {
        TensorKind.INPUT: x.detach().reshape(80, 96),
        TensorKind.WEIGHT: layer.weight.detach(),
        TensorKind.GRAD_OUTPUT: grad.reshape(80, 64),
    }
    roles_of = {
        TensorKind.INPUT: ("fwd_input", "wgrad_input"),
        TensorKind.WEIGHT: ("fwd_weight", "dgrad_weight"),
        TensorKind.GRAD_OUTPUT: ("dgrad_grad_output", "wgrad_grad_output"),
    }
    for kind, (last_role, rows_role) in roles_of.items():
        last, rows = quantizer.seen[kind]
        for operand, operand_role, axis in ((last, last_role, -1), (rows, rows_role, -2)):
            assert operand is not None and operand.factor is None
            if operand_role == role:
                assert not torch.equal(operand.values, raw[kind]), f"{role} was not quantized"
                assert torch.equal(operand.values, fq(raw[kind], "e2m1", axis)), f"{role}: wrong format or axis"
            else:
                assert torch.equal(operand.values, raw[kind]), f"{operand_role} was quantized but is 'none'"


def test_all_roles_none_is_the_plain_linear_layer() -> None:
    source, layer, _ = make_layer(NONE)
    reference_layer = nn.Linear(96, 64)
    reference_layer.load_state_dict(source.state_dict())
    x, grad, out = run(layer)
    x_ref, _, out_ref = run(reference_layer)
    assert torch.allclose(out, out_ref, rtol=1e-6, atol=1e-6)
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-6, atol=1e-6)
    assert torch.allclose(source.weight.grad, reference_layer.weight.grad, rtol=1e-5, atol=1e-5)


def test_master_weights_stay_untouched_and_in_float32() -> None:
    source, layer, _ = make_layer(MIXED)
    before = source.weight.detach().clone()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(4, 96))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert torch.equal(source.weight, before)
    assert layer.weight is source.weight and layer.weight.dtype == torch.float32
    assert layer.weight.grad.dtype == torch.float32
    optimizer.step()
    assert all(v.dtype == torch.float32 for state in optimizer.state.values() for v in state.values() if v.dim())


def test_gpt2_conv1d_matches_the_equivalent_linear() -> None:
    torch.manual_seed(0)
    conv = Conv1D(64, 96)
    linear = nn.Linear(96, 64)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    conv_layer = QuantizedLinear(conv, MXQuantizer(MIXED, 32, "floor"))
    linear_layer = QuantizedLinear(linear, MXQuantizer(MIXED, 32, "floor"))
    x_conv, _, out_conv = run(conv_layer)
    x_lin, _, out_lin = run(linear_layer)
    assert torch.equal(out_conv, out_lin)
    assert torch.equal(x_conv.grad, x_lin.grad)
    assert torch.equal(conv.weight.grad, linear.weight.grad.t())


def test_attention_products_quantize_along_their_reduction_dimensions() -> None:
    formats = dict.fromkeys(ROLES, "e4m3") | {"dgrad_grad_output": "e5m2", "wgrad_grad_output": "e5m2"}
    matmuls = QuantizedAttentionMatmuls(MXQuantizer(formats, 32, "floor"))
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 40, 64, generator=generator).requires_grad_(True) for _ in range(3))
    probs = torch.softmax(torch.randn(2, 3, 40, 40, generator=generator), -1).requires_grad_(True)

    scores = matmuls.qk(q, k)
    assert torch.equal(scores, fq(q.detach(), "e4m3", -1) @ fq(k.detach(), "e4m3", -1).transpose(-1, -2))
    upstream = torch.randn_like(scores)
    scores.backward(upstream)
    # dQ = dS·K reduces over key tokens: dS along its last dim, K along its rows.
    assert torch.equal(q.grad, fq(upstream, "e5m2", -1) @ fq(k.detach(), "e4m3", -2))
    # dK = dSᵀ·Q reduces over query tokens: both along rows.
    assert torch.equal(k.grad, fq(upstream, "e5m2", -2).transpose(-1, -2) @ fq(q.detach(), "e4m3", -2))

    out = matmuls.pv(probs, v)
    v_t = v.detach().transpose(-1, -2)
    # P·V reduces over key tokens: P along its last dim, V along its rows (the last dim of Vᵀ).
    assert torch.equal(out, fq(probs.detach(), "e4m3", -1) @ fq(v_t, "e4m3", -1).transpose(-1, -2))
    upstream = torch.randn_like(out)
    out.backward(upstream)
    # dP = dO·Vᵀ reduces over head_dim; dV = Pᵀ·dO reduces over query tokens.
    assert torch.equal(probs.grad, fq(upstream, "e5m2", -1) @ fq(v_t, "e4m3", -2))
    dv_t = fq(upstream, "e5m2", -2).transpose(-1, -2) @ fq(probs.detach(), "e4m3", -2)
    assert torch.equal(v.grad, dv_t.transpose(-1, -2))
