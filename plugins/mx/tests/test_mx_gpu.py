"""The Triton path on a CUDA GPU: bit-exact against the reference, eager and under torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton", reason="Triton is not installed")

import mx_kernel_checks as checks  # noqa: E402
from newcompute_mx import reference
from newcompute_mx.config import ROLES
from newcompute_mx.formats import FORMATS
from newcompute_mx.layer import QuantizedLinear
from newcompute_mx.ops import mx_fake_quantize_pair
from newcompute_mx.quantizers import MXQuantizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

MXFP8 = {role: "e5m2" if "grad_output" in role else "e4m3" for role in ROLES}


@pytest.mark.parametrize("check", checks.ALL_CHECKS, ids=lambda check: check.__name__)
def test_kernels_equal_reference_on_cuda(check: object) -> None:
    assert check("cuda") == []  # type: ignore[operator]


@pytest.mark.parametrize("tile", [(64, 64), (128, 64)])
def test_other_tile_shapes_equal_reference(tile: tuple[int, int]) -> None:
    assert checks.check_exhaustive_bfloat16("cuda", tile) + checks.check_edges("cuda", tile) == []


@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_large_operand_both_axes(mode: str) -> None:
    x = checks.spread_operand((4096, 3072), torch.bfloat16, seed=11).cuda()
    fmt = FORMATS["e4m3"]
    last, rows = mx_fake_quantize_pair(x, fmt, FORMATS["e5m2"], 32, mode, torch.bfloat16)  # type: ignore[arg-type]
    assert checks.differences(last, reference.mx_fake_quantize(x, fmt, 32, -1, mode), "last") == []  # type: ignore[arg-type]
    want_rows = reference.mx_fake_quantize(x, FORMATS["e5m2"], 32, -2, mode)  # type: ignore[arg-type]
    assert checks.differences(rows, want_rows, "rows") == []


def test_quantizer_under_torch_compile_is_bit_exact() -> None:
    def scaled_then_quantized(x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return mx_fake_quantize_pair(x * 3.0, FORMATS["e4m3"], FORMATS["e2m1"], 32, "floor", torch.bfloat16)

    x = checks.spread_operand((1000, 256), torch.bfloat16, seed=5).cuda()
    compiled = torch.compile(scaled_then_quantized, fullgraph=True)
    for got, want in zip(compiled(x), scaled_then_quantized(x)):
        assert checks.differences(got, want, "compiled") == []


def test_linear_under_torch_compile_equals_eager() -> None:
    torch.manual_seed(0)
    source = nn.Linear(512, 384, bias=False).cuda()
    layer = QuantizedLinear(source, MXQuantizer(MXFP8, 32, "floor"))
    x = torch.randn(4, 200, 512, device="cuda", requires_grad=True)
    grad = torch.randn(4, 200, 384, device="cuda")

    def step(module: nn.Module) -> list[torch.Tensor]:
        x.grad, source.weight.grad = None, None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = module(x)
        out.backward(grad)
        return [out.detach(), x.grad.clone(), source.weight.grad.clone()]

    eager = step(layer)
    compiled = step(torch.compile(layer, fullgraph=True))
    for got, want in zip(compiled, eager):
        assert torch.equal(got, want)


def test_tiny_llama_trains_on_cuda_compiled_and_eager() -> None:
    """The CPU training test's run and tolerance (see test_mx_training.py for the reasoning), on CUDA."""
    from transformers import LlamaForCausalLM

    import newcompute
    from newcompute import Registry
    from newcompute.config import resolve_paradigm
    from newcompute_mx import plugin
    from test_mx_training import LLAMA, STEPS, TOLERANCE

    registry = Registry()
    registry.register(plugin, name="mx")
    data = torch.randint(0, LLAMA.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0)).cuda()

    def train(paradigm: str | None, compile_model: bool = False) -> torch.Tensor:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LLAMA).cuda()
        if paradigm:
            newcompute.apply(model, [resolve_paradigm(registry, paradigm, {"attention": True})], registry=registry)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        run = torch.compile(model) if compile_model else model
        losses = []
        for step in range(STEPS):
            ids = data[(step % 2) * 4 : (step % 2) * 4 + 4]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = run(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return torch.tensor(losses)

    bf16 = train(None)
    for paradigm, compile_model in (("mxfp8", False), ("mxfp8", True), ("fp8", False)):
        losses = train(paradigm, compile_model)
        gap = (losses - bf16).abs().max().item()
        assert torch.isfinite(losses).all() and gap <= TOLERANCE, (paradigm, compile_model, gap, losses, bf16)
