"""``a @ bᵀ`` with every operand of all three GEMMs quantized as its GEMM reduces it.

Written once for the ``a @ bᵀ`` shape because every product the plugin
simulates has it: a linear layer (``X @ Wᵀ``), attention scores
(``Q @ Kᵀ``) and attention output (``P @ (Vᵀ)ᵀ``). Leading batch dimensions
are shared by ``a`` and ``b``. The saved tensors are the already-quantized
backward operands, so the backward pass re-reads nothing in high precision
except the incoming gradient, and the high-precision inputs (master weights
included) are never modified.
"""

from __future__ import annotations

from typing import Any

import torch

from newcompute_mx.fp8_scaling import TensorKind
from newcompute_mx.quantizers import Operand, OperandQuantizer


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the GEMMs run in: autocast's when it is on for x's device, else x's own."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _gemm(left: Operand, right: torch.Tensor, right_factor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``left.values @ right`` and, for per-tensor FP8, the product of both decode factors applied after."""
    product = torch.matmul(left.values, right)
    factors = [f for f in (left.factor, right_factor) if f is not None]
    if not factors:
        return product
    scale = factors[0] if len(factors) == 1 else factors[0] * factors[1]
    return (product.to(torch.float32) * scale).to(dtype)


class _QuantizedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, b: torch.Tensor, quantizer: OperandQuantizer, dtype: torch.dtype
    ) -> torch.Tensor:
        (a_fwd, a_wgrad), (b_fwd, b_dgrad) = quantizer.pairs(
            [(TensorKind.INPUT, a, True, b.requires_grad), (TensorKind.WEIGHT, b, True, a.requires_grad)], dtype
        )
        ctx.quantizer, ctx.dtype, ctx.a_dtype, ctx.b_dtype = quantizer, dtype, a.dtype, b.dtype
        a_saved = a_wgrad or Operand(a.new_empty(0))
        b_saved = b_dgrad or Operand(b.new_empty(0))
        ctx.save_for_backward(a_saved.values, a_saved.factor, b_saved.values, b_saved.factor)
        return _gemm(a_fwd, b_fwd.values.transpose(-1, -2), b_fwd.factor, dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a_values, a_factor, b_values, b_factor = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_dgrad, g_wgrad = ctx.quantizer.pair(TensorKind.GRAD_OUTPUT, grad, ctx.dtype, last=need_a, rows=need_b)
        grad_a = _gemm(g_dgrad, b_values, b_factor, ctx.dtype).to(ctx.a_dtype) if need_a else None
        grad_b = None
        if need_b:
            transposed = Operand(g_wgrad.values.transpose(-1, -2), g_wgrad.factor)
            grad_b = _gemm(transposed, a_values, a_factor, ctx.dtype).to(ctx.b_dtype)
        return grad_a, grad_b, None, None


def quantized_matmul(
    a: torch.Tensor, b: torch.Tensor, quantizer: OperandQuantizer, dtype: torch.dtype
) -> torch.Tensor:
    """``a @ bᵀ`` in ``dtype`` with quantized operands; ``a``: (..., M, K), ``b``: (..., N, K).

    Without autograd (evaluation, generation) only the forward GEMM's operands are quantized.
    """
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _QuantizedMatmul.apply(a, b, quantizer, dtype)
    (a_fwd, _), (b_fwd, _) = quantizer.pairs([(TensorKind.INPUT, a, True, False), (TensorKind.WEIGHT, b, True, False)], dtype)
    return _gemm(a_fwd, b_fwd.values.transpose(-1, -2), b_fwd.factor, dtype)
