"""The GPU implementation of one optical product call, with no host synchronisation.

Per call: one pass quantizes the input (recording its range), one
quantizes the weight (with the look-up-table snap, recording its range),
the GEMM applies the noisy read-out in its epilogue (recording the
product's range), and a one-program kernel folds the three ranges and
advances the noise counter. Every range lives in device buffers from start
to end. When ranges come from quantiles the product is first written in
fp32 so that its quantiles can be taken, then read out by the elementwise
kernel.
"""

from __future__ import annotations

import torch

from newcompute_optical import distributed, reference
from newcompute_optical.kernels.fold import close_call
from newcompute_optical.kernels.gemm import multiply
from newcompute_optical.kernels.quantize import quantize
from newcompute_optical.kernels.readout import Noise, Readout


def _record_quantiles(slot: torch.Tensor, x: torch.Tensor, quantiles: list[float]) -> None:
    slot.copy_(distributed.encode(reference.batch_range(x, (quantiles[0], quantiles[1]))))


def product(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    input_range: torch.Tensor,
    weight_range: torch.Tensor,
    output_range: torch.Tensor,
    stats: torch.Tensor,
    calls: torch.Tensor,
    levels: int,
    lut_min: float | None,
    quantiles: list[float] | None,
    take: float,
    key0: int,
    key1: int,
    training: bool,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    noise = Noise(calls, key0, key1)
    min_max = training and quantiles is None
    collect = stats if min_max else None
    aq = quantize(a, input_range, levels, dtype, stats=collect, stats_row=0)
    bq = quantize(b, weight_range, levels, dtype, stats=collect, stats_row=1, lut_min=lut_min)
    if training and quantiles is not None:
        _record_quantiles(stats[0], a, quantiles)
        _record_quantiles(stats[1], b, quantiles)
        exact = multiply(aq, bq, torch.float32)
        _record_quantiles(stats[2], exact, quantiles)
        out = quantize(exact, output_range, levels, dtype, noise=noise, bias=bias)
    else:
        readout = Readout(output_range, levels, noise)
        out = multiply(aq, bq, dtype, bias=bias, stats=collect, readout=readout)
    if training:
        distributed.agree(stats)
    close_call((input_range, weight_range, output_range), stats, calls, take, training)
    return out, aq, bq


def sampled_product(
    rows: torch.Tensor,
    b: torch.Tensor,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    levels: int,
    lut_min: float | None,
    key: tuple[int, int],
    calls: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(read-out, fp32 product)`` of ``rows`` with fixed ranges; no statistics, no fold, the counter kept.

    The product goes through :func:`newcompute_optical.reference.exact_product` (it is needed in fp32
    anyway) and then the elementwise read-out, rather than an autotuned GEMM for a shape that only
    measured steps see.
    """
    input_range, weight_range, output_range = ranges
    aq = quantize(rows, input_range, levels, dtype)
    bq = quantize(b, weight_range, levels, dtype, lut_min=lut_min)
    exact = reference.exact_product(aq, bq)
    return quantize(exact, output_range, levels, dtype, noise=Noise(calls, *key)), exact
