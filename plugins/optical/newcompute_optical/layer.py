"""A linear layer (``nn.Linear`` or GPT-2's ``Conv1D``) computed as an optical product."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from newcompute import ReplacedLinear
from newcompute_optical.config import ProductSettings
from newcompute_optical.product import OpticalProduct, compute_dtype


class OpticalLinear(ReplacedLinear):
    """Input and weight at limited precision, a noisy read-out, the bias added electronically.

    The original parameters are reused (same names and layout); the
    simulation's state is under ``optical.*`` in the state dict.
    """

    def __init__(self, source: nn.Module, settings: ProductSettings, name: str) -> None:
        super().__init__(source)
        self.settings = settings
        self.optical = OpticalProduct(settings, name, device=source.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.settings.q_bypass:
            return self._exact(x)
        weight = self.weight_out_in()
        flat = x.reshape(1, -1, self.in_features)
        out = self.optical(flat, weight.unsqueeze(0), self.bias, compute_dtype(x, weight))
        return out.reshape(*x.shape[:-1], self.out_features)

    def _exact(self, x: torch.Tensor) -> torch.Tensor:
        """The source layer's own computation, so that bypass is bit-identical to it."""
        if not self.weight_transposed:
            return F.linear(x, self.weight, self.bias)
        flat = torch.addmm(self.bias, x.reshape(-1, self.in_features), self.weight)
        return flat.reshape(*x.shape[:-1], self.out_features)
