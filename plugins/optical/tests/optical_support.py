"""Helpers shared by the optical plugin's tests: tiny models and a registry holding only this plugin."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import newcompute as nc
import newcompute_optical.plugin as optical_plugin
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
