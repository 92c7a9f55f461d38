"""Helpers shared by the optical plugin's tests: tiny models and a registry holding only this plugin."""

from __future__ import annotations

import copy
from typing import Any

import newcompute_optical.plugin as optical_plugin
import torch
from newcompute_optical import OpticalAttentionMatmuls, ProductSettings
from newcompute_optical.ops import attention as fused_attention
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import newcompute as nc
from newcompute.attention import MATMULS_ATTR, newcompute_attention_forward
from newcompute.config import resolve_paradigm

VOCAB = 64


def registry() -> nc.Registry:
    reg = nc.Registry()
    reg.register(optical_plugin, name="optical")
    return reg


def tiny(family: str, seed: int = 0, layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    common: dict[str, Any] = {"vocab_size": VOCAB}
    if family == "llama":
        config = LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, **common,
        )
        return LlamaForCausalLM(config)
    if family == "qwen2":
        config = Qwen2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, **common,
        )
        return Qwen2ForCausalLM(config)
    if family == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=layers, n_head=4, n_positions=64, **common)
        return GPT2LMHeadModel(config)
    raise ValueError(family)


def optical(model: torch.nn.Module, **table: Any) -> nc.ComposeReport:
    """Apply the optical paradigm with ``table`` as its ``[paradigm.optical]`` table, as a run file would."""
    reg = registry()
    return nc.apply(model, [resolve_paradigm(reg, "optical", table)], registry=reg)


def tokens(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


class AttentionHost(torch.nn.Module):
    """The smallest module the core's attention function accepts, holding one layer's optical matmuls."""

    def __init__(self, matmuls: torch.nn.Module, causal: bool) -> None:
        super().__init__()
        self.is_causal = causal
        self.add_module(MATMULS_ATTR, matmuls)


def _attention_inputs(q_len: int, k_len: int, dim: int, seed: int, dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(2, 4, q_len, dim, generator=generator)
    key = torch.randn(2, 2, k_len, dim, generator=generator) * 0.7
    value = torch.randn(2, 2, k_len, dim, generator=generator)
    return [t.to(dtype) for t in (query, key, value)]


def compare_fused_attention(
    device: str, dtype: torch.dtype, q_len: int, k_len: int, causal: bool, training: bool, dim: int = 24,
    grad_tolerance: float = 0.02, first_call: bool = False,
) -> str:
    """Fused attention on ``device`` against the two optical products on the CPU, from the same state.

    Both start from ranges calibrated and moved once by the two-product
    path, or (``first_call``) from none, so that each calibrates. Asserts outputs within one level of the context read-out (and
    almost all identical), the same ranges and counters afterwards, and
    straight-through gradients within ``grad_tolerance`` of the largest.
    Returns a one-line summary.
    """
    reference_matmuls = OpticalAttentionMatmuls(ProductSettings(q_init_seed=5), "model.layers.3.self_attn").train()
    if not first_call:
        first = [t.requires_grad_() for t in _attention_inputs(q_len, k_len, dim, 1, dtype)]
        newcompute_attention_forward(AttentionHost(reference_matmuls, causal), *first, None, scaling=0.3)
    reference_matmuls.train(training)
    fused_matmuls = copy.deepcopy(reference_matmuls).to(device)
    inputs = _attention_inputs(q_len, k_len, dim, 2, dtype)
    theirs_inputs = [t.clone().requires_grad_() for t in inputs]
    mine_inputs = [t.to(device).requires_grad_() for t in inputs]
    mine = fused_attention.attention(
        fused_matmuls.scores, fused_matmuls.context, *mine_inputs, 0.3, causal and q_len > 1, dtype
    ).transpose(1, 2).cpu()
    theirs, _ = newcompute_attention_forward(AttentionHost(reference_matmuls, causal), *theirs_inputs, None, scaling=0.3)
    out_range = reference_matmuls.context.output_range
    level = (out_range[1] - out_range[0]).item() / 255
    differ = (mine != theirs).float().mean().item()
    assert differ < 0.02, f"{differ:.3%} of outputs differ"
    assert ((mine.float() - theirs.float()).abs() <= level * 1.01).all(), "an output is more than one level off"
    for name in ("scores", "context"):
        mine_product, their_product = getattr(fused_matmuls, name), getattr(reference_matmuls, name)
        for buffer in ("input_range", "weight_range", "output_range"):
            torch.testing.assert_close(
                getattr(mine_product, buffer).cpu(), getattr(their_product, buffer), rtol=1e-5, atol=1e-6,
                msg=f"{name}.{buffer}",
            )
        assert torch.equal(mine_product.calls.cpu(), their_product.calls), f"{name}.calls"
    weights = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(3))
    (mine.float() * weights).sum().backward()
    (theirs.float() * weights).sum().backward()
    for name, a, b in zip(("query", "key", "value"), mine_inputs, theirs_inputs):
        scale = b.grad.float().abs().max().item()
        error = (a.grad.cpu().float() - b.grad.float()).abs().max().item()
        assert error <= grad_tolerance * scale, f"grad {name} off by {error:.3g} (largest {scale:.3g})"
    return f"{differ:.2%} of outputs one level off, ranges and gradients agree"
