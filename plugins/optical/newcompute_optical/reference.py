"""The optical product, defined in plain PyTorch: the numerics every implementation must reproduce.

For one simulated product ``out = A·Bᵀ`` (A: ``batch × M × K``, B:
``batch × N × K``) with running ranges for the three tensor roles (input
A, weight B, output):

1. A is quantized deterministically to ``levels`` uniform levels of its
   range ``[lo, hi]``: clamp, scale to ``[0, levels−1]``, round half to
   even, rescale. All arithmetic is fp32, one IEEE rounding per operation,
   with ``inv = (levels−1)/(hi−lo)`` and ``step = (hi−lo)/(levels−1)``
   (an empty range quantizes everything to ``lo``).
2. B is quantized the same way; then, when a look-up-table minimum is set,
   non-zero values whose magnitude is below ``lut_min·max(|lo|, |hi|)``
   snap to that magnitude, keeping their sign.
3. Both are cast to the compute dtype and multiplied with fp32
   accumulation.
4. The fp32 product is quantized over the output range with a dither
   ``u ∈ [−½, ½)`` of a level added before rounding (the photodetector's
   noisy read-out); the level index is clamped to ``[0, levels−1]``.
   ``u`` is :func:`dither`: the core's Philox stream
   (:class:`newcompute.RandomStream`), keyed per product and advanced by a
   per-call counter.
5. The bias, if any, is added in fp32 after the read-out (it is electronic)
   and the result cast to the compute dtype.

Ranges are running ``(lo, hi)`` pairs: a batch is quantized with the ranges
learnt from the batches before it; in training its own statistics (min and
max, or two quantiles) are folded in afterwards,
``r ← r + (1 − smooth)·(batch − r)``. A role whose range was never set
takes the batch's own statistics before the product is computed (that is
how the first training batch initialises them, and how a model evaluated
before any training gets usable ranges). In eval ranges are frozen.
"""

from __future__ import annotations

import torch

from newcompute import RandomStream

UNSET = (float("inf"), float("-inf"))
"""A range that no batch has set yet (so that ``lo > hi``)."""



def dither(rows: int, cols: int, key0: int, key1: int, call: torch.Tensor, first_row: int = 0) -> torch.Tensor:
    """The fp32 read-out dither in [−½, ½) of rows ``first_row`` … of a ``cols``-wide output.

    Lane 0 of the stream ``(key0, key1)``'s uniforms, less ½: exact in fp32,
    and the same bits the Triton kernels draw with ``tl.philox`` tile by tile
    (the counter layout is :meth:`newcompute.RandomStream.uniform`'s).
    """
    return RandomStream(key0, key1).uniform((rows, cols), call, first_row) - 0.5

def _step_and_inverse(span: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor-by-tensor divisions: a Python scalar numerator would become a reciprocal and a multiply."""
    top = torch.full_like(span, levels - 1)
    inverse = torch.where(span > 0, top / span, torch.zeros_like(span))
    return span / top, inverse


def quantize(x: torch.Tensor, value_range: torch.Tensor, levels: int) -> torch.Tensor:
    """Deterministic quantization of ``x`` to ``levels`` levels of ``[lo, hi]``, in fp32."""
    lo, hi = value_range[0], value_range[1]
    step, inverse = _step_and_inverse(hi - lo, levels)
    scaled = (torch.clamp(x.float(), lo, hi) - lo) * inverse
    return torch.round(scaled) * step + lo


def quantize_dithered(
    x: torch.Tensor, value_range: torch.Tensor, levels: int, noise: torch.Tensor
) -> torch.Tensor:
    """The noisy read-out: ``noise`` (in levels) is added before rounding, the level index clamped."""
    lo, hi = value_range[0], value_range[1]
    step, inverse = _step_and_inverse(hi - lo, levels)
    scaled = (torch.clamp(x.float(), lo, hi) - lo) * inverse
    index = torch.clamp(torch.round(scaled + noise), 0.0, float(levels - 1))
    return index * step + lo


def snap_to_lut(x: torch.Tensor, value_range: torch.Tensor, lut_min: float) -> torch.Tensor:
    """Non-zero values below the look-up table's smallest magnitude take that magnitude.

    The threshold's fp32 factor is filled on the device, not copied from the host, so that a captured
    CUDA graph (a measured telemetry step) can contain this.
    """
    largest = torch.maximum(value_range[0].abs(), value_range[1].abs())
    threshold = torch.full((), lut_min, dtype=torch.float32, device=x.device) * largest
    small = (x != 0) & (x.abs() < threshold)
    return torch.where(small, torch.sign(x) * threshold, x)


def quantize_weight(w: torch.Tensor, value_range: torch.Tensor, levels: int, lut_min: float | None) -> torch.Tensor:
    quantized = quantize(w, value_range, levels)
    return quantized if lut_min is None else snap_to_lut(quantized, value_range, lut_min)


def exact_product(aq: torch.Tensor, bq: torch.Tensor) -> torch.Tensor:
    """The fp32 product ``aq · bqᵀ`` (batch × M × K by batch × N × K) of operands already in the compute dtype.

    On CUDA, bf16 and fp16 operands go to the tensor cores with fp32 output:
    a product of two such values is exact in fp32, so this is the fp32 GEMM
    of step 3 in another accumulation order, at a fraction of its cost.
    Elsewhere, the fp32 GEMM itself.
    """
    if not (aq.is_cuda and aq.dtype in (torch.bfloat16, torch.float16)):
        return torch.matmul(aq.float(), bq.float().transpose(-1, -2))
    if aq.shape[0] == 1 and bq.shape[0] == 1:
        return torch.mm(aq[0], bq[0].transpose(0, 1), out_dtype=torch.float32).unsqueeze(0)
    return torch.bmm(aq, bq.transpose(-1, -2), out_dtype=torch.float32)


def nearest_rank(count: int, quantile: float) -> int:
    """0-based rank of a quantile with 'nearest' interpolation (ties to even, like torch.quantile)."""
    return round(quantile * (count - 1))


def batch_range(x: torch.Tensor, quantiles: tuple[float, float] | None) -> torch.Tensor:
    """A batch's ``(lo, hi)`` in fp32: min and max, or two nearest-rank quantiles.

    Quantiles come from one sort (no size limit, unlike ``torch.quantile``;
    faster on a GPU than two ``kthvalue`` selections over one huge slice).
    """
    flat = x.detach().reshape(-1).float()
    if quantiles is None:
        lo, hi = torch.aminmax(flat)
        return torch.stack((lo, hi))
    ordered = torch.sort(flat).values
    count = flat.numel()
    return torch.stack([ordered[nearest_rank(count, q)] for q in quantiles])


def is_set(value_range: torch.Tensor) -> torch.Tensor:
    return value_range[0] <= value_range[1]


def fold(running: torch.Tensor, batch: torch.Tensor, take: float) -> torch.Tensor:
    """The running range after one training batch; ``take = 1 − smooth``."""
    weight = torch.full((), take, dtype=torch.float32, device=running.device)
    smoothed = running + weight * (batch - running)
    return torch.where(is_set(running), smoothed, batch)


def product(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    levels: int,
    lut_min: float | None,
    key: tuple[int, int],
    call: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optical product with fixed ranges: ``(out, A quantized, B quantized, fp32 product)``."""
    a_range, b_range, out_range = ranges
    aq = quantize(a, a_range, levels).to(dtype)
    bq = quantize_weight(b, b_range, levels, lut_min).to(dtype)
    exact = torch.matmul(aq.float(), bq.float().transpose(-1, -2))
    batch, rows, cols = exact.shape
    noise = dither(batch * rows, cols, key[0], key[1], call).reshape(batch, rows, cols)
    out = quantize_dithered(exact, out_range, levels, noise)
    if bias is not None:
        out = out + bias.float()
    return out.to(dtype), aq, bq, exact
