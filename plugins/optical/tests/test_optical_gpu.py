"""The Triton path on a CUDA GPU against the plain-PyTorch reference (run on the CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from newcompute_optical import OpticalAttentionMatmuls, OpticalLinear, ProductSettings, reference
from newcompute_optical.ops.product import product as product_op

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LEVELS = 256


def _state(device: str) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    ranges = [torch.tensor(r, device=device) for r in ([-2.5, 3.0], [-0.12, 0.1], [-9.0, 8.0])]
    return ranges, torch.full((3, 2), float("-inf"), device=device), torch.tensor(17, device=device)


def _operands(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(2, 300, 192, generator=generator).to(dtype)
    b = (torch.randn(2, 160, 192, generator=generator) * 0.05).to(dtype)
    bias = torch.randn(160, generator=generator)
    return a, b, bias


def _run(device: str, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor, training: bool, dtype: torch.dtype):
    ranges, stats, calls = _state(device)
    out = product_op(
        a.to(device), b.to(device), bias.to(device), *ranges, stats, calls, LEVELS, 0.02, None, 0.1, 3, 99,
        training, dtype,
    )
    return [t.cpu() for t in (*out, *ranges, stats, calls)]


def test_large_tensors_without_host_syncs() -> None:
    torch.manual_seed(0)
    layer = OpticalLinear(nn.Linear(2048, 4096, device="cuda"), ProductSettings(), "big").train()
    x = torch.randn(8192, 2048, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        layer(x).float().square().mean().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(x)
            out.float().square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.numel() > 1 << 24
    assert torch.isfinite(layer.optical.output_range).all()
    assert layer.optical.calls.item() == 2


def test_quantile_ranges_have_no_size_limit() -> None:
    torch.manual_seed(0)
    settings = ProductSettings(q_quantiles=(0.001, 0.999))
    layer = OpticalLinear(nn.Linear(2048, 4096, device="cuda"), settings, "big").train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = layer(torch.randn(8192, 2048, device="cuda"))
    assert out.numel() > 1 << 24
    lo, hi = layer.optical.output_range.tolist()
    assert out.min().item() <= lo < hi <= out.max().item()


def test_compiled_layer_matches_eager_on_gpu() -> None:
    torch.manual_seed(0)
    layers = [OpticalLinear(nn.Linear(256, 192, device="cuda"), ProductSettings(), "layer").train() for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    warm = torch.randn(512, 256, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for layer in layers:
            layer(warm)
    compiled = torch.compile(layers[1], fullgraph=True)
    for seed in range(3):
        x = torch.randn(512, 256, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            expected, got = layers[0](x), compiled(x)
        assert torch.equal(expected, got)
        expected.float().sum().backward()
        got.float().sum().backward()
    torch.testing.assert_close(layers[0].weight.grad, layers[1].weight.grad, rtol=1e-2, atol=1e-3)
    for mine, theirs in zip(layers[0].optical.buffers(), layers[1].optical.buffers()):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_triton_product_matches_the_reference(dtype: torch.dtype, training: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b, bias = _operands(dtype)
    gpu = _run("cuda", a, b, bias, training, dtype)
    cpu = _run("cpu", a, b, bias, training, dtype)
    out_g, aq_g, bq_g, in_g, w_g, o_g, stats_g, calls_g = gpu
    out_c, aq_c, bq_c, in_c, w_c, o_c, stats_c, calls_c = cpu
    # deterministic parts: bit-exact
    assert torch.equal(aq_g, aq_c) and torch.equal(bq_g, bq_c)
    assert torch.equal(in_g, in_c) and torch.equal(w_g, w_c)
    assert torch.equal(stats_g, stats_c) and torch.equal(calls_g, calls_c)
    torch.testing.assert_close(o_g, o_c, rtol=1e-5, atol=0.0)
    # the read-out: same noise stream, so equal except where accumulation order moves a value across a boundary
    level = 17.0 / (LEVELS - 1)
    rounding = 2.0**-7 * out_c.float().abs() if dtype == torch.bfloat16 else 0.0
    diff = (out_g.float() - out_c.float()).abs()
    assert (diff <= level * 1.001 + rounding).all()
    assert (out_g != out_c).float().mean() < 0.01


def test_noise_statistics_match_the_reference() -> None:
    a, b, _ = _operands(torch.float32)
    ranges = [torch.tensor(r) for r in ([-2.5, 3.0], [-0.12, 0.1], [-9.0, 8.0])]
    _, aq, bq, exact = reference.product(a, b, None, ranges, LEVELS, 0.02, (3, 99), torch.tensor(17), torch.float32)
    step = (ranges[2][1] - ranges[2][0]) / (LEVELS - 1)
    scaled = (exact.clamp(-9.0, 8.0) + 9.0) / step
    residuals = {}
    for device in ("cuda", "cpu"):
        out = _run(device, a, b, torch.zeros(160), False, torch.float32)[0]
        residuals[device] = (out + 9.0) / step - scaled
    for r in residuals.values():
        assert r.abs().max() < 1.0 + 1e-3
        assert abs(r.mean().item()) < 0.01
    assert abs(residuals["cuda"].var().item() - residuals["cpu"].var().item()) < 0.005


@pytest.mark.parametrize("autocast", [True, False], ids=["bf16-autocast", "fp32"])
def test_linear_gradients_match_the_reference(autocast: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    source = nn.Linear(192, 160)
    layers = {}
    grads = {}
    x = torch.randn(4, 75, 192)
    g = torch.randn(4, 75, 160)
    for device in ("cuda", "cpu"):
        copy = nn.Linear(192, 160).to(device)
        copy.load_state_dict(source.state_dict())
        layer = OpticalLinear(copy, ProductSettings(), "layer").train()
        xd = x.to(device).requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = layer(xd)
        out.backward(g.to(device).to(out.dtype))
        layers[device] = layer
        grads[device] = [t.cpu().float() for t in (out, xd.grad, copy.weight.grad, copy.bias.grad)]
    tol = {"rtol": 2e-2, "atol": 2e-2} if autocast else {"rtol": 1e-4, "atol": 1e-4}
    for name, mine, theirs in zip(["grad_x", "grad_w", "grad_b"], grads["cuda"][1:], grads["cpu"][1:]):
        torch.testing.assert_close(mine, theirs, **tol, msg=name)
    for mine, theirs in zip(layers["cuda"].optical.ranges(), layers["cpu"].optical.ranges()):
        torch.testing.assert_close(mine.cpu(), theirs, rtol=1e-5, atol=1e-6)


def test_attention_products_match_the_reference() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 40, 32, generator=generator) for _ in range(3))
    probs = torch.softmax(torch.randn(2, 3, 40, 40, generator=generator), dim=-1)
    outs = {}
    for device in ("cuda", "cpu"):
        matmuls = OpticalAttentionMatmuls(ProductSettings(), "model.layers.0.self_attn").to(device).train()
        outs[device] = (matmuls.qk(q.to(device), k.to(device)).cpu(), matmuls.pv(probs.to(device), v.to(device)).cpu())
    for mine, theirs in zip(outs["cuda"], outs["cpu"]):
        level = (theirs.max() - theirs.min()).item() / 255
        assert (mine != theirs).float().mean() < 0.01
        assert ((mine - theirs).abs() <= level * 1.01).all()
