"""Stand-in paradigms for the trainer's tests, and checks that they behave as declared.

The first-party plugins are written in parallel, so the trainer is tested
with three small paradigms that exercise what the trainer must carry
through checkpoints: ``int8ish`` (layer role) fake-quantizes linear inputs
against a running absolute maximum kept in a buffer (paradigm state);
``noisy-attention`` adds Gaussian noise to the attention scores from
torch's global generator (RNG state); ``sgd`` (optimizer role) builds
SGD with momentum (optimizer state of another shape than AdamW's).
Other test files import :func:`make_registry`, :func:`tiny_run` and
:func:`quiet` from here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from rich.console import Console
from torch import nn

import newcompute
from newcompute import AttentionMatmuls, Paradigm, ReplacedLinear, Role, hookimpl, is_linear_like
from newcompute.config import RunConfig


class Int8ishConfig(BaseModel):
    levels: int = 127


class NoisyConfig(BaseModel):
    std: float = 0.05


class SgdConfig(BaseModel):
    momentum: float = 0.9


class Int8ishLinear(ReplacedLinear):
    """Rounds inputs to ``levels`` steps of the running |x| maximum (straight-through gradient)."""

    def __init__(self, source: nn.Module, levels: int) -> None:
        super().__init__(source)
        self.levels = levels
        self.register_buffer("x_absmax", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.x_absmax.copy_(torch.maximum(self.x_absmax, x.detach().abs().max()))
        step = torch.clamp(self.x_absmax, min=1e-8) / self.levels
        quantized = x + (torch.round(x / step) * step - x).detach()
        return nn.functional.linear(quantized, self.weight_out_in(), self.bias)


class NoisyMatmuls(AttentionMatmuls):
    """Noisy scores; ``calls`` counts products in every mode, as a hardware seed counter would."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        scores = query @ key.transpose(-1, -2)
        return scores + self.std * torch.randn_like(scores)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return probs @ value


class TrainTestPlugin:
    @hookimpl
    def newcompute_register_paradigms(self) -> list[Paradigm]:
        return [
            Paradigm("int8ish", "fake-quantized linear inputs (test)", Int8ishConfig, frozenset({Role.LAYER})),
            Paradigm("noisy-attention", "noisy attention scores (test)", NoisyConfig, frozenset({Role.ATTENTION})),
            Paradigm("sgd", "SGD with momentum (test)", SgdConfig, frozenset({Role.OPTIMIZER})),
        ]

    @hookimpl
    def newcompute_replace_layer(
        self, paradigm: Paradigm, config: BaseModel, name: str, module: nn.Module
    ) -> nn.Module | None:
        if paradigm.name == "int8ish" and is_linear_like(module):
            return Int8ishLinear(module, config.levels)
        return None

    @hookimpl
    def newcompute_attention_matmuls(
        self, paradigm: Paradigm, config: BaseModel, name: str, attention: nn.Module
    ) -> AttentionMatmuls | None:
        return NoisyMatmuls(config.std) if paradigm.name == "noisy-attention" else None

    @hookimpl
    def newcompute_build_optimizer(
        self,
        paradigm: Paradigm,
        config: BaseModel,
        params: list[newcompute.ParamInfo],
        settings: newcompute.OptimizerSettings,
    ) -> torch.optim.Optimizer | None:
        if paradigm.name != "sgd":
            return None
        return torch.optim.SGD([i.param for i in params], lr=settings.lr, momentum=config.momentum)


def make_registry() -> newcompute.Registry:
    registry = newcompute.Registry()
    record = registry.register(TrainTestPlugin(), name="train-test-paradigms")
    assert record.status == "ok", record.error
    return registry


def tiny_run(output_dir: Path, paradigms: dict[str, Any] | None = None, **train: Any) -> RunConfig:
    """A run of the tiny preset small enough for a CPU test: 32-token blocks, 4 sequences a step."""
    settings = {"steps": 6, "batch_size": 4, "micro_batch_size": 2, "block_size": 32, "output_dir": str(output_dir)}
    return RunConfig.model_validate(
        {
            "model": {"name": "tiny", "init": "scratch"},
            "train": {**settings, **train},
            "data": {"max_tokens": 8192, "validation_max_blocks": 4},
            "paradigm": paradigms or {},
        }
    )


def quiet() -> Console:
    return Console(file=io.StringIO(), width=160)


def test_int8ish_rounds_inputs_to_the_running_maximum_grid() -> None:
    layer = Int8ishLinear(nn.Linear(2, 1, bias=False), levels=2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 10.0]]))
    out = layer(torch.tensor([[4.0, 0.9]]))
    # absmax 4 → step 2: 4 stays 4, 0.9 rounds to 0 (not 1: round(0.45) = 0), so 4·1 + 0·10.
    assert layer.x_absmax.item() == 4.0
    assert out.item() == 4.0
    layer.eval()
    # eval keeps the recorded maximum: 3 rounds to 4 (round(1.5) = 2 steps, ties to even), 1.2 to 2 (round(0.6) = 1).
    assert layer(torch.tensor([[3.0, 1.2]])).item() == 4.0 + 20.0
    assert layer.x_absmax.item() == 4.0


def test_noisy_attention_draws_from_the_global_generator() -> None:
    matmuls = NoisyMatmuls(std=1.0)
    q, k = torch.ones(1, 1, 2, 3), torch.ones(1, 1, 2, 3)
    torch.manual_seed(7)
    first = matmuls.qk(q, k)
    torch.manual_seed(7)
    expected = torch.full((1, 1, 2, 2), 3.0) + torch.randn(1, 1, 2, 2)
    assert torch.equal(first, expected)
    assert matmuls.calls.item() == 1


def test_registry_offers_all_three_roles() -> None:
    registry = make_registry()
    roles = {name: p.roles for name, p in registry.paradigms.items()}
    assert roles == {
        "int8ish": frozenset({Role.LAYER}),
        "noisy-attention": frozenset({Role.ATTENTION}),
        "sgd": frozenset({Role.OPTIMIZER}),
    }
