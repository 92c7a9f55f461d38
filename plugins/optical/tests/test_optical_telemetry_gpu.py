"""Measured optical calls on a CUDA GPU: the telemetry kernels against the PyTorch reference, under capture."""

from __future__ import annotations

import copy

import pytest
import torch
from newcompute_optical import OpticalAttentionMatmuls, OpticalLinear, ProductSettings, reference, statistics
from torch import nn

import newcompute as nc

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

EXACT_SLOTS = ("calls", "input_use", "weight_use", "output_use", "outputs", "clipped")


def _assert_same_sums(mine: nc.StatisticSums, theirs: nc.StatisticSums) -> None:
    for slot in EXACT_SLOTS:
        assert torch.equal(mine[slot], theirs[slot]), (slot, mine[slot], theirs[slot])
    for slot in ("noise", "signal"):
        torch.testing.assert_close(mine[slot], theirs[slot], rtol=1e-5, atol=0.0, msg=slot)


def test_exact_product_of_bf16_operands_is_their_fp32_product() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    generator = torch.Generator().manual_seed(0)
    aq = torch.randn(3, 70, 96, generator=generator).to(torch.bfloat16).cuda()
    bq = torch.randn(3, 50, 96, generator=generator).to(torch.bfloat16).cuda()
    for a, b in ((aq, bq), (aq[:1, ::3], bq[:1])):
        exact = reference.exact_product(a, b)
        assert exact.dtype == torch.float32
        torch.testing.assert_close(exact, a.float() @ b.float().transpose(-1, -2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_measured_linear_matches_the_reference_record(monkeypatch: pytest.MonkeyPatch, training: bool) -> None:
    """The same call, measured by the Triton kernels and by the PyTorch reference, adds the same sums."""
    torch.manual_seed(0)
    layer = OpticalLinear(nn.Linear(192, 160, device="cuda"), ProductSettings(), "layer").train(training)
    x = torch.randn(4, 75, 192, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        layer(x)
    twin = copy.deepcopy(layer)
    for module, kernels in ((layer, statistics.kernels), (twin, None)):
        monkeypatch.setattr(statistics, "kernels", kernels)
        with torch.autocast("cuda", dtype=torch.bfloat16), nc.collect_statistics(row_stride=3):
            module(x)
    assert layer.optical.telemetry["outputs"].item() == 100 * 160  # 300 rows, every third one
    _assert_same_sums(layer.optical.telemetry, twin.optical.telemetry)


def test_a_measured_training_step_is_captured_in_a_cuda_graph_without_host_reads() -> None:
    torch.manual_seed(0)
    layer = OpticalLinear(nn.Linear(192, 160, device="cuda"), ProductSettings(), "layer").train()
    x = torch.randn(4, 75, 192, device="cuda", requires_grad=True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16), nc.collect_statistics(row_stride=2):
            layer(x).float().square().mean().backward()

    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    sums = layer.optical.telemetry
    before = {slot: sums[slot].item() for slot in statistics.SLOTS}
    graph.replay()
    after = {slot: sums[slot].item() for slot in statistics.SLOTS}
    assert after["calls"] == before["calls"] + 1
    assert after["outputs"] == before["outputs"] + 150 * 160  # 300 rows, every second one, by 160 outputs
    assert after["signal"] > before["signal"] and after["input_use"] > before["input_use"]


def test_sampled_attention_on_the_gpu_matches_the_cpu_reference() -> None:
    """Fused attention's sampled measurement: the Triton quantization and read-out against the reference."""
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, heads, 40, 32, generator=generator) for heads in (4, 2, 2))
    results = {}
    for device in ("cpu", "cuda"):
        matmuls = OpticalAttentionMatmuls(ProductSettings(), "attn").to(device).eval()
        for product, ranges in ((matmuls.scores, ((-3.0, 3.0), (-2.5, 2.5), (-9.0, 9.0))),
                                (matmuls.context, ((0.0, 1.0), (-3.0, 3.0), (-2.0, 2.0)))):
            for buffer, value_range in zip(product.ranges(), ranges):
                buffer.copy_(torch.tensor(value_range))
            product.mark_calibrated()
        with nc.collect_statistics(row_stride=3):
            matmuls.observe_sampled(*(t.to(device) for t in (query, key, value)), 32**-0.5, causal=True)
        results[device] = [product.telemetry.sums.cpu() for product in (matmuls.scores, matmuls.context)]
    for mine, theirs in zip(results["cuda"], results["cpu"]):
        # counts and range use exactly; the read-out may move a rare product to the neighbouring level
        torch.testing.assert_close(mine[:6], theirs[:6], rtol=1e-3, atol=0.0)
        torch.testing.assert_close(mine[6:], theirs[6:], rtol=2e-2, atol=0.0)
