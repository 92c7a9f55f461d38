"""Shared fixtures: small in-test plugins and an installed-looking throwaway distribution."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, Field
from torch import nn

import newcompute as nc
from newcompute import plugins
from newcompute.config import ModelSettings
from newcompute.models import load_model


class ScaleConfig(BaseModel):
    factor: float = Field(1.0, gt=0.0, description="Multiplies every output.")


class ScaledLinear(nc.ReplacedLinear):
    """Linear whose output is multiplied by ``factor``; counts calls in a buffer (saved state)."""

    def __init__(self, source: nn.Module, factor: float) -> None:
        super().__init__(source)
        self.factor = factor
        self.register_buffer("calls", torch.zeros((), dtype=torch.long, device=source.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return nn.functional.linear(x, self.weight_out_in(), self.bias) * self.factor


class ExactMatmuls(nc.AttentionMatmuls):
    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return query @ key.transpose(-1, -2)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return probs @ value


class TestPlugin:
    """Paradigms 'scale' (layers), 'exact-attn' (attention) and 'sgd' (optimizer)."""

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [
            nc.Paradigm("scale", "Scales linear outputs", ScaleConfig, frozenset({nc.Role.LAYER})),
            nc.Paradigm("scale2", "A second layer paradigm", ScaleConfig, frozenset({nc.Role.LAYER})),
            nc.Paradigm("exact-attn", "Exact attention matmuls", ScaleConfig, frozenset({nc.Role.ATTENTION})),
            nc.Paradigm("sgd", "Plain SGD", ScaleConfig, frozenset({nc.Role.OPTIMIZER})),
            nc.Paradigm("sgd2", "Another optimizer", ScaleConfig, frozenset({nc.Role.OPTIMIZER})),
        ]

    @nc.hookimpl
    def newcompute_replace_layer(
        self, paradigm: nc.Paradigm, config: ScaleConfig, name: str, module: nn.Module
    ) -> nn.Module | None:
        return ScaledLinear(module, config.factor) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_attention_matmuls(
        self, paradigm: nc.Paradigm, config: ScaleConfig, name: str, attention: nn.Module
    ) -> nc.AttentionMatmuls | None:
        return ExactMatmuls()

    @nc.hookimpl
    def newcompute_build_optimizer(
        self, paradigm: nc.Paradigm, config: ScaleConfig, params: list[nc.ParamInfo], settings: nc.OptimizerSettings
    ) -> torch.optim.Optimizer:
        matrices = [p.param for p in params if p.kind is nc.ParamKind.HIDDEN_MATRIX]
        rest = [p.param for p in params if p.kind is not nc.ParamKind.HIDDEN_MATRIX]
        return torch.optim.SGD(
            [{"params": matrices, "name": "matrices"}, {"params": rest, "name": "rest"}], lr=settings.lr
        )


@pytest.fixture
def registry() -> nc.Registry:
    reg = nc.Registry()
    reg.register(TestPlugin(), name="test-plugin")
    return reg


def tiny(preset: str = "tiny", seed: int = 0) -> nn.Module:
    return load_model(ModelSettings(name=preset, init="scratch"), seed=seed).model.eval()


PLUGIN_SOURCE = textwrap.dedent(
    '''
    from pydantic import BaseModel
    from torch import nn
    import newcompute as nc

    newcompute_api = ">=1.0,<2"

    class Config(BaseModel):
        factor: float = 2.0

    class Halved(nc.ReplacedLinear):
        def forward(self, x):
            return nn.functional.linear(x, self.weight_out_in(), self.bias) / self.factor

    @nc.hookimpl
    def newcompute_register_paradigms():
        return [nc.Paradigm("halve", "Test paradigm from a distribution", Config, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(paradigm, config, name, module):
        if not nc.is_linear_like(module):
            return None
        layer = Halved(module)
        layer.factor = config.factor
        return layer

    @nc.hookimpl
    def newcompute_register_commands(app):
        @app.command("halve-info")
        def halve_info():
            """Added by the nc-good plugin."""
            print("halving since 1.2.3")
    '''
)


def _write_dist(root: Path, dist: str, module: str, source: str, ep_name: str, metadata: str = "") -> None:
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n{metadata}")
    (info / "entry_points.txt").write_text(f"[newcompute]\n{ep_name} = {module}\n")


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Three distributions visible to importlib.metadata: a good one, one that fails to import, one too new.

    They are real dist-info folders on sys.path, which is exactly what pip
    leaves behind, so entry-point discovery runs unmodified.
    """
    _write_dist(tmp_path, "nc-good", "nc_good_plugin", PLUGIN_SOURCE, "good")
    _write_dist(tmp_path, "nc-broken", "nc_broken_plugin", "import does_not_exist_anywhere\n", "broken")
    _write_dist(tmp_path, "nc-future", "nc_future_plugin", 'newcompute_api = ">=9"\n', "future")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_default", None)
    yield tmp_path
    for name in ("nc_good_plugin", "nc_broken_plugin", "nc_future_plugin"):
        sys.modules.pop(name, None)
