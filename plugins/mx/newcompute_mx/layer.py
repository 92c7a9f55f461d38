"""The stand-in for ``nn.Linear`` / GPT-2 ``Conv1D`` whose three GEMMs run in a simulated number format."""

from __future__ import annotations

import torch
from torch import nn

from newcompute import ReplacedLinear
from newcompute_mx.matmul import compute_dtype, quantized_matmul
from newcompute_mx.quantizers import OperandQuantizer


class QuantizedLinear(ReplacedLinear):
    """A linear layer whose forward and backward GEMMs see quantized operands.

    The parameters are the original ones (same names, layout and dtype); the
    GEMMs read them and never write them, so master weights and the
    optimizer state stay in their own precision. The bias is added after
    the GEMM in the GEMM's dtype, as a fused epilogue would.
    """

    def __init__(self, source: nn.Module, quantizer: OperandQuantizer) -> None:
        super().__init__(source)
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x)
        out = quantized_matmul(x.reshape(-1, self.in_features), self.weight_out_in(), self.quantizer, dtype)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(out.dtype)
