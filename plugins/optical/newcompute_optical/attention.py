"""Q·Kᵀ and P·V inside attention, each computed as an optical product.

Keys and values take the weight role (their own ranges and the look-up
table snap), queries and probabilities the input role. The core applies
scaling, masks, softmax and dropout between the two products, as
NewComputeBench's attention does around mase-triton's products.

On CUDA the whole attention usually takes fused kernels instead
(:mod:`newcompute_optical.ops.attention`), which compute the same
definition without materialising the scores.
"""

from __future__ import annotations

import torch

from newcompute import AttentionMatmuls, collecting_statistics
from newcompute_optical.config import ProductSettings
from newcompute_optical.ops import attention as fused_attention
from newcompute_optical.product import OpticalProduct, compute_dtype


def _per_head(product: OpticalProduct, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Run ``a @ bᵀ`` for every (batch, head) pair as one batched optical product."""
    lead = a.shape[:-2]
    out = product(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), None, compute_dtype(a, b))
    return out.reshape(*lead, *out.shape[-2:])


class OpticalAttentionMatmuls(AttentionMatmuls):
    """Optical scores (``scores.*`` state) and context (``context.*`` state) of one attention layer."""

    def __init__(self, settings: ProductSettings, name: str) -> None:
        super().__init__()
        self.settings = settings
        self.scores = OpticalProduct(settings, f"{name}.scores")
        self.context = OpticalProduct(settings, f"{name}.context")

    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        if self.settings.q_bypass:
            return query @ key.transpose(-1, -2)
        return _per_head(self.scores, query, key)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if self.settings.q_bypass:
            return probs @ value
        return _per_head(self.context, probs, value.transpose(-1, -2))

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool
    ) -> torch.Tensor | None:
        if collecting_statistics():
            return None  # measured product by product, so that both report their statistics
        dtype = compute_dtype(query, key)
        if not fused_attention.applies(self.settings, query, dtype):
            return None
        return fused_attention.attention(self.scores, self.context, query, key, value, scale, causal, dtype)
