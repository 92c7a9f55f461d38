"""Transforming tiny Llama, Qwen2 and GPT-2 models: what is replaced, intercepted and trained."""

from __future__ import annotations

import pytest
import torch
from optical_support import optical, tiny, tokens
from torch import nn
from transformers.pytorch_utils import Conv1D

import newcompute as nc
from newcompute_optical import OpticalAttentionMatmuls, OpticalLinear, distributed
from newcompute_optical.product import OpticalProduct

FAMILIES = ["llama", "qwen2", "gpt2"]


def _linear_names(model: nn.Module) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_linear_but_the_head_is_replaced_and_every_attention_intercepted(family: str) -> None:
    model = tiny(family)
    linears = _linear_names(model)
    report = optical(model)
    replaced = {name for name, module in model.named_modules() if isinstance(module, OpticalLinear)}
    assert replaced == linears - {"lm_head"}
    assert isinstance(model.get_submodule("lm_head"), nn.Linear)
    attention = report.attention["optical"]
    assert len(attention) == model.config.num_hidden_layers
    for name in attention:
        assert isinstance(model.get_submodule(name).newcompute_matmuls, OpticalAttentionMatmuls)
    nc.verify_attention(model)


def test_the_routing_check_learns_nothing_and_waits_for_no_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer runs ``verify_attention`` on CPU before moving the model, with NCCL possibly already up.

    A collective on a CPU tensor fails there ("No backend type associated
    with device type cpu"), and calibrating on four dummy tokens would set the
    ranges the first real batch should set.
    """

    def no_collective(stats: torch.Tensor) -> None:
        raise AssertionError("the routing check reached a collective")

    model = tiny("llama")
    optical(model)
    model.eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    monkeypatch.setattr(distributed, "agree", no_collective)
    nc.verify_attention(model)
    after = model.state_dict()
    assert [name for name, value in before.items() if not torch.equal(value, after[name])] == []
    assert not any(module.is_calibrated() for module in model.modules() if isinstance(module, OpticalProduct))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_training_step_reaches_every_parameter_and_updates_every_range(family: str) -> None:
    model = tiny(family)
    optical(model)
    model.train()
    ids = tokens()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name, buffer in model.named_buffers():
        if name.endswith("_range"):
            assert torch.isfinite(buffer).all() and buffer[0] <= buffer[1], name
        if name.endswith("calls"):
            assert buffer.item() == 1, name


def test_optical_model_differs_from_exact_and_bypass_restores_it() -> None:
    ids = tokens()
    exact = tiny("llama").eval()(input_ids=ids).logits
    simulated = tiny("llama")
    optical(simulated)
    assert (simulated.eval()(input_ids=ids).logits - exact).abs().max() > 1e-3
    bypassed = tiny("llama")
    optical(bypassed, fc={"q_bypass": True}, attention={"q_bypass": True})
    torch.testing.assert_close(bypassed.eval()(input_ids=ids).logits, exact, rtol=1e-5, atol=1e-5)


def test_rules_and_sections_apply_separately() -> None:
    model = tiny("llama")
    optical(model, exclude=["lm_head", "*.mlp.*"], attention={"q_levels": 16})
    assert isinstance(model.get_submodule("model.layers.0.mlp.up_proj"), nn.Linear)
    assert isinstance(model.get_submodule("model.layers.0.self_attn.q_proj"), OpticalLinear)
    matmuls = model.get_submodule("model.layers.0.self_attn").newcompute_matmuls
    assert matmuls.settings.q_levels == 16
    assert model.get_submodule("model.layers.0.self_attn.q_proj").settings.q_levels == 256


def test_a_transformed_model_state_dict_restores_the_simulation() -> None:
    trained = tiny("qwen2")
    optical(trained)
    trained.train()
    ids = tokens()
    for _ in range(2):
        trained(input_ids=ids, labels=ids).loss.backward()
    restored = tiny("qwen2", seed=3)
    optical(restored)
    restored.load_state_dict(trained.state_dict())
    trained.eval()
    restored.eval()
    assert torch.equal(trained(input_ids=ids).logits, restored(input_ids=ids).logits)
