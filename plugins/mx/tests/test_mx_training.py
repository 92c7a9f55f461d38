"""A tiny Llama trained a few steps in simulated MXFP8/FP8 tracks the bf16 run.

Tolerance, and why: the largest per-operand rounding these recipes add is
E5M2's on gradients, unit roundoff 2^-3, which is 32× bf16's 2^-8. On this
run bf16 itself drifts from fp32 by at most 1e-3 nats over 16 steps (the
test checks that calibration still holds). If the loss perturbation grows
linearly with operand roundoff, MXFP8 should stay within 32 × 1e-3 ≈ 0.03
nats of bf16 at every step — about 2% of the 1.6 nats the run learns. The
negative control (E2M1 for every operand, unit roundoff 2^-2) must leave
that band, showing the tolerance can tell formats apart.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import newcompute
from newcompute import Registry
from newcompute.config import resolve_paradigm
from newcompute_mx import plugin
from newcompute_mx.config import ROLES

TOLERANCE = 0.03
BF16_DRIFT = 2e-3
STEPS = 16
LLAMA = LlamaConfig(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=64,
)


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = Registry()
    registry.register(plugin, name="mx")
    return registry


def train(registry: Registry, paradigm: str | None, table: dict[str, Any] | None = None, fp32: bool = False) -> torch.Tensor:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LLAMA)
    if paradigm is not None:
        newcompute.apply(model, [resolve_paradigm(registry, paradigm, dict(table or {}))], registry=registry)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randint(0, LLAMA.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0))
    losses = []
    for step in range(STEPS):
        ids = data[(step % 2) * 4 : (step % 2) * 4 + 4]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not fp32):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return torch.tensor(losses)


@pytest.fixture(scope="module")
def bf16_losses(registry: Registry) -> torch.Tensor:
    losses = train(registry, None)
    assert (losses - train(registry, None, fp32=True)).abs().max() <= BF16_DRIFT, "tolerance calibration changed"
    assert losses[0] - losses[-1] > 1.0, "the reference run does not learn"
    return losses


@pytest.mark.parametrize(
    ("paradigm", "table"),
    [("mxfp8", {}), ("mxfp8", {"attention": True, "scale_mode": "ceil"}), ("fp8", {})],
)
def test_loss_tracks_bf16(registry: Registry, bf16_losses: torch.Tensor, paradigm: str, table: dict[str, Any]) -> None:
    losses = train(registry, paradigm, table)
    assert torch.isfinite(losses).all()
    assert (losses - bf16_losses).abs().max() <= TOLERANCE


def test_tolerance_separates_a_coarser_format(registry: Registry, bf16_losses: torch.Tensor) -> None:
    losses = train(registry, "mxfp4", dict.fromkeys(ROLES, "e2m1"))
    assert torch.isfinite(losses).all()
    assert (losses - bf16_losses).abs().max() > TOLERANCE
