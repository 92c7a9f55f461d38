"""On a CUDA GPU: the fast bfloat16 step (eager and compiled, cuBLAS and Triton products) against
the float32 reference, the Triton kernel in bfloat16, and the plugin's CUDA defaults."""

from __future__ import annotations

import warnings

import pytest
import torch
from normuon_helpers import BF16_RELATIVE_TOLERANCE, normuon_group, registry, relative_error

import newcompute
from newcompute_normuon import NorMuonAdamW, ReferenceNorMuon

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SHAPES = {"q": (256, 256), "k": (256, 256), "o": (256, 256), "up": (704, 256), "down": (256, 704), "kv": (64, 256)}


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(*s, generator=generator) for n, s in SHAPES.items()}
    tensors["c_attn"] = torch.randn(256, 768, generator=generator) * 0.02
    return {n: t.cuda() for n, t in tensors.items()}


def _groups(params: dict[str, torch.Tensor], ns_dtype: str) -> list[dict]:
    return [
        normuon_group([params[n] for n in SHAPES], ns_dtype=ns_dtype, weight_decay=0.1),
        normuon_group([params["c_attn"]], ns_dtype=ns_dtype, transposed=True, splits=3, coefficients="polar_express"),
    ]


def _updates(make, ns_dtype: str, steps: int = 3) -> dict[str, torch.Tensor]:
    params = {n: torch.nn.Parameter(t) for n, t in _tensors(0).items()}
    optimizer = make(_groups(params, ns_dtype))
    for step in range(steps):
        before = {n: p.detach().clone() for n, p in params.items()}
        for name, grad in _tensors(10 + step).items():
            params[name].grad = grad
        optimizer.step()
    return {n: params[n].detach() - before[n] for n in params}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return _updates(ReferenceNorMuon, "float32")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("ns_kernel", ["torch", "triton"])
def test_bfloat16_step_matches_the_float32_reference(reference, compiled: bool, ns_kernel: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compile failure falls back with a RuntimeWarning
        fast = _updates(lambda g: NorMuonAdamW(g, compile=compiled, ns_kernel=ns_kernel), "bfloat16")
    for name in fast:
        assert relative_error(fast[name], reference[name]) < BF16_RELATIVE_TOLERANCE, name


def test_float32_step_matches_the_reference_tightly(reference) -> None:
    fast = _updates(NorMuonAdamW, "float32")
    for name in fast:
        assert relative_error(fast[name], reference[name]) < 1e-4, name


@pytest.mark.parametrize("shape", [(3, 200, 333), (2, 1536, 4096)])
def test_triton_symmetric_product_in_bfloat16(shape: tuple[int, int, int]) -> None:
    from newcompute_normuon.symmetric import symmetric_product

    torch.manual_seed(0)
    y = (torch.randn(*shape, device="cuda") / shape[-1] ** 0.5).bfloat16()
    want = y.float() @ y.float().mT
    gram = symmetric_product(y)
    assert relative_error(gram.float(), gram.mT.float()) < 1e-3
    assert relative_error(gram.float(), want) < 1e-2
    poly = symmetric_product(gram, alpha=2.0, addend=gram, beta=-3.0, diagonal=3.4)
    eye = torch.eye(shape[1], device="cuda")
    assert relative_error(poly.float(), 2 * want @ want - 3 * want + 3.4 * eye) < 2e-2


def test_plugin_uses_triton_eagerly_on_cuda() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).cuda()
    reg = registry()
    newcompute.apply(model, ["normuon"], registry=reg)
    optimizer = newcompute.build_optimizer(model, newcompute.OptimizerSettings(lr=3e-3), registry=reg)
    assert optimizer.kernels.symmetric and not optimizer.kernels.compiled
    tokens = torch.randint(0, 128, (4, 32), device="cuda")
    losses = []
    for _ in range(8):
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
