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

from newcompute import AttentionMatmuls, collecting_statistics, statistics_row_stride, statistics_rows
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
        sampled = statistics_row_stride() > 1
        if collecting_statistics() and not sampled:
            return None  # measured product by product, every row, so that both report their statistics
        dtype = compute_dtype(query, key)
        if not fused_attention.applies(self.settings, query, dtype):
            return None
        out = fused_attention.attention(self.scores, self.context, query, key, value, scale, causal, dtype)
        if collecting_statistics():
            self.observe_sampled(query, key, value, scale, causal)
        return out

    @torch.no_grad()
    def observe_sampled(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool
    ) -> None:
        """Both products' statistics on the query rows ``statistics_rows`` samples, beside fused attention.

        A training step that telemetry measures keeps the fused kernels; the sampled rows are recomputed
        product by product (:meth:`OpticalProduct.observe_rows`), softmax and causal mask in between as
        the core applies them, which costs a fraction of running the whole attention unfused. The
        scores' input range use is over every query; everything of the context product is over the
        sampled rows' probabilities, the only ones computed.
        """
        groups = query.shape[1] // key.shape[1]
        if groups > 1:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        dtype = compute_dtype(query, key)
        lead = query.shape[:-2]
        rows = statistics_rows(query)
        flat_query, flat_rows = query.reshape(-1, *query.shape[-2:]), rows.reshape(-1, *rows.shape[-2:])
        scores = self.scores.observe_rows(flat_query, flat_rows, key.reshape(-1, *key.shape[-2:]), dtype)
        scores = scores.reshape(*lead, *scores.shape[-2:]) * scale
        if causal:
            positions = torch.arange(query.shape[-2], device=query.device)
            ahead = positions[None, :] > positions[:: statistics_row_stride(), None] + (key.shape[-2] - query.shape[-2])
            scores = scores.masked_fill(ahead, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
        flat_probs = probs.reshape(-1, *probs.shape[-2:])
        values = value.transpose(-1, -2).reshape(-1, value.shape[-1], value.shape[-2])
        self.context.observe_rows(flat_probs, flat_probs, values, compute_dtype(probs, value))
