"""Attention's two GEMMs (Q·Kᵀ and P·V) with quantized operands, through the core's interception."""

from __future__ import annotations

import torch

from newcompute import AttentionMatmuls
from newcompute_mx.matmul import compute_dtype, quantized_matmul
from newcompute_mx.quantizers import OperandQuantizer


def _batched(a: torch.Tensor, b: torch.Tensor, quantizer: OperandQuantizer) -> torch.Tensor:
    """``a @ bᵀ`` over (batch, heads) flattened into one batch dimension."""
    lead = a.shape[:-2]
    out = quantized_matmul(a.flatten(0, -3), b.flatten(0, -3), quantizer, compute_dtype(a))
    return out.reshape(*lead, *out.shape[-2:])


class QuantizedAttentionMatmuls(AttentionMatmuls):
    """Q·Kᵀ blocks Q and K along head_dim; P·V blocks P and V along the key tokens.

    Both are ``a @ bᵀ`` products (``P @ V = P @ (Vᵀ)ᵀ``), so one quantized
    matmul serves both and its backward quantizes the gradients along the
    reduction dimension of each backward GEMM too.
    """

    def __init__(self, quantizer: OperandQuantizer) -> None:
        super().__init__()
        self.quantizer = quantizer

    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return _batched(query, key, self.quantizer)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return _batched(probs, value.transpose(-1, -2), self.quantizer)
