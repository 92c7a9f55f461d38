"""A second plugin for composition checks: exact layers and exact attention products.

Composing with it shows that a paradigm leaves the modules it does not own
alone and works next to another plugin's replacements, without depending on
which first-party plugins happen to be installed.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn
from torch.nn import functional as F

from newcompute.attention import AttentionMatmuls
from newcompute.hookspecs import hookimpl
from newcompute.layers import ReplacedLinear, is_linear_like
from newcompute.paradigm import Paradigm, Role, StrictConfig

PARTNER_LAYER = "conformance-partner-layer"
PARTNER_ATTENTION = "conformance-partner-attention"


class PartnerLayerConfig(StrictConfig):
    """Nothing to set: the partner's layers are exact."""


class PartnerAttentionConfig(StrictConfig):
    """Nothing to set: the partner's attention products are exact."""


class ExactLinear(ReplacedLinear):
    """Computes what the source layer computes, so its presence changes no number."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_out_in(), self.bias)


class ExactMatmuls(AttentionMatmuls):
    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return query @ key.transpose(-1, -2)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return probs @ value


class PartnerPlugin:
    """Registers :data:`PARTNER_LAYER` and :data:`PARTNER_ATTENTION`."""

    newcompute_api = ">=1.0,<2"

    @hookimpl
    def newcompute_register_paradigms(self) -> list[Paradigm]:
        layer = Paradigm(PARTNER_LAYER, "Exact linear layers", PartnerLayerConfig, frozenset({Role.LAYER}))
        attention = Paradigm(
            PARTNER_ATTENTION, "Exact attention products", PartnerAttentionConfig, frozenset({Role.ATTENTION})
        )
        return [layer, attention]

    @hookimpl
    def newcompute_replace_layer(
        self, paradigm: Paradigm, config: BaseModel, name: str, module: nn.Module
    ) -> nn.Module | None:
        return ExactLinear(module) if is_linear_like(module) else None

    @hookimpl
    def newcompute_attention_matmuls(
        self, paradigm: Paradigm, config: BaseModel, name: str, attention: nn.Module
    ) -> AttentionMatmuls | None:
        return ExactMatmuls()
