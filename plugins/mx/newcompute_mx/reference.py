"""The reference quantizers: plain PyTorch, CPU or any device, exact by construction.

Everything is computed in float64, where every step below is exact for
float32/bfloat16/float16 inputs: powers of two are built from their bit
pattern, dividing by a power of two only shifts the exponent, and the one
rounding that matters (to the element grid) is ``torch.round`` (half to even)
on an exact multiple count. The two places where the hardware itself rounds
in float32 — ``amax / max_normal`` for the round-up scale and ``x * scale``
for per-tensor FP8 — are computed in float64 and then rounded to float32,
which gives the correctly rounded float32 result (53 ≥ 2·24 + 2 bits, so
double rounding cannot occur). The Triton kernels are tested bit for bit
against this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from newcompute_mx.formats import (
    SCALE_BIAS,
    SCALE_MAX_EXPONENT,
    SCALE_MIN_EXPONENT,
    SCALE_NAN_CODE,
    ElementFormat,
)

ScaleMode = Literal["floor", "ceil"]
FLOAT32_MAX = torch.finfo(torch.float32).max


def pow2(exponent: torch.Tensor) -> torch.Tensor:
    """``2**exponent`` as float64, built from the bit pattern so it is exact (|exponent| ≤ 1022)."""
    return torch.bitwise_left_shift(exponent.to(torch.int64) + 1023, 52).view(torch.float64)


def floor_log2(magnitude: torch.Tensor) -> torch.Tensor:
    """``floor(log2(m))`` for positive float64 ``m``, exactly (frexp reads the exponent field)."""
    _, exponent = torch.frexp(magnitude)
    return exponent.to(torch.int64) - 1


def ceil_log2(magnitude: torch.Tensor) -> torch.Tensor:
    """``ceil(log2(m))`` for positive float64 ``m``, exactly."""
    mantissa, exponent = torch.frexp(magnitude)
    return exponent.to(torch.int64) - (mantissa == 0.5).to(torch.int64)


def round_to_element(values: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """The nearest ``fmt`` value to each float64 value: ties to even, ±inf and overflow saturate, NaN stays NaN.

    The grid step at ``|v|`` is ``2**(max(floor(log2|v|), min_exponent) - mantissa_bits)``;
    below the smallest normal the step stops shrinking, which is what makes
    subnormals. Zero (and anything under half the smallest subnormal) keeps its sign.
    """
    magnitude = values.abs()
    finite_positive = torch.where(torch.isfinite(magnitude) & (magnitude > 0), magnitude, 1.0)
    exponent = torch.clamp(floor_log2(finite_positive), min=fmt.min_exponent)
    step = pow2(exponent - fmt.mantissa_bits)
    rounded = torch.round(magnitude / step) * step
    return torch.copysign(torch.clamp(rounded, max=fmt.max_normal), values)


def _to_blocks(x: torch.Tensor, axis: int, block_size: int) -> tuple[torch.Tensor, int]:
    """``x`` as float64 with ``axis`` last, zero-padded to whole blocks: ``(..., n_blocks, block_size)``."""
    moved = x.to(torch.float64).movedim(axis, -1)
    length = moved.shape[-1]
    if length % block_size:
        moved = torch.nn.functional.pad(moved, (0, block_size - length % block_size))
    return moved.reshape(*moved.shape[:-1], -1, block_size), length


def _from_blocks(blocks: torch.Tensor, axis: int, length: int) -> torch.Tensor:
    flat = blocks.reshape(*blocks.shape[:-2], -1)[..., :length]
    return flat.movedim(-1, axis)


def shared_exponents(amax: torch.Tensor, fmt: ElementFormat, scale_mode: ScaleMode) -> torch.Tensor:
    """The E8M0 exponent of each block from its float64 ``amax`` (finite blocks only).

    ``floor``: OCP MX v1.0 §6.3, ``floor(log2(amax)) - emax_elem``.
    ``ceil``: ``ceil(log2(fl32(amax / max_normal)))``, the smallest power of two
    that keeps ``amax / X`` within the element range (NVIDIA's and torchao's
    RCEIL; the quotient is rounded to float32 first, as those implementations do).
    Both are clamped to E8M0's range; an all-zero block gets the smallest scale.
    """
    if scale_mode == "floor":
        positive = amax > 0
        exponent = floor_log2(torch.where(positive, amax, 1.0)) - fmt.max_exponent
    else:
        ratio = (amax / fmt.max_normal).to(torch.float32).to(torch.float64)
        positive = ratio > 0
        exponent = ceil_log2(torch.where(positive, ratio, 1.0))
    exponent = torch.where(positive, exponent, SCALE_MIN_EXPONENT)
    return torch.clamp(exponent, SCALE_MIN_EXPONENT, SCALE_MAX_EXPONENT)


@dataclass(frozen=True)
class MXQuantized:
    """One tensor in MX form: an E8M0 code per block and the element values, laid out like the input.

    ``scale_codes`` has the input's shape with ``axis`` replaced by the number
    of blocks; code 0xFF marks a NaN block (one that held a NaN or an infinity).
    """

    scale_codes: torch.Tensor
    elements: torch.Tensor
    axis: int
    block_size: int

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        codes = self.scale_codes.movedim(self.axis, -1).to(torch.int64)
        scale = torch.where(codes == SCALE_NAN_CODE, torch.nan, pow2(codes - SCALE_BIAS))
        blocks, length = _to_blocks(self.elements, self.axis, self.block_size)
        return _from_blocks(blocks * scale.unsqueeze(-1), self.axis, length).to(dtype)


def mx_quantize(
    x: torch.Tensor,
    fmt: ElementFormat,
    block_size: int = 32,
    axis: int = -1,
    scale_mode: ScaleMode = "floor",
) -> MXQuantized:
    """Quantize ``x`` to MX along ``axis`` in blocks of ``block_size`` (the last block may be short).

    A block holding a NaN or ±inf gets the NaN scale, so the whole block
    decodes to NaN: OCP MX v1.0 makes the scale NaN when the block maximum is
    not finite. Elements are ``round_to_element(V / X)``.
    """
    blocks, length = _to_blocks(x, axis, block_size)
    amax = blocks.abs().amax(dim=-1)
    finite = torch.isfinite(amax)
    amax = torch.where(finite, amax, 0.0)
    exponent = shared_exponents(amax, fmt, scale_mode)
    elements = round_to_element(blocks / pow2(exponent).unsqueeze(-1), fmt)
    elements = torch.where(finite.unsqueeze(-1), elements, torch.nan)
    codes = torch.where(finite, exponent + SCALE_BIAS, SCALE_NAN_CODE).to(torch.uint8)
    return MXQuantized(
        scale_codes=codes.movedim(-1, axis),
        elements=_from_blocks(elements, axis, length),
        axis=axis,
        block_size=block_size,
    )


def mx_fake_quantize(
    x: torch.Tensor,
    fmt: ElementFormat,
    block_size: int = 32,
    axis: int = -1,
    scale_mode: ScaleMode = "floor",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x`` quantized to MX and decoded again, in ``out_dtype`` (default: ``x.dtype``).

    Decoded values are exact in float32 and, for every element format here,
    in bfloat16 too (at most 7 significant bits), so the result is what an MX
    GEMM would multiply.
    """
    quantized = mx_quantize(x, fmt, block_size, axis, scale_mode)
    return quantized.dequantize(torch.float32).to(out_dtype or x.dtype)


def tensor_scale(amax: torch.Tensor, fmt: ElementFormat, margin: int = 0) -> torch.Tensor:
    """Transformer Engine's per-tensor scale ``(max_normal / amax) / 2**margin`` as float32.

    An amax of zero or a non-finite amax gives scale 1 (nothing to scale by);
    a quotient beyond float32 is clamped to its largest finite value.
    """
    amax64 = amax.to(torch.float64)
    usable = torch.isfinite(amax64) & (amax64 > 0)
    quotient = (fmt.max_normal / torch.where(usable, amax64, 1.0)).to(torch.float32)
    scale = torch.clamp(quotient.to(torch.float64) * 2.0**-margin, max=FLOAT32_MAX).to(torch.float32)
    return torch.where(usable, scale, torch.ones_like(scale))


def scaled_quantize(x: torch.Tensor, fmt: ElementFormat, scale: torch.Tensor) -> torch.Tensor:
    """Per-tensor FP8 cast: ``round_to_element(fl32(x * scale))`` in float32.

    Returns the element values themselves (multiply by ``1/scale`` to decode);
    like a saturating hardware cast (``cvt.rn.satfinite``), ±inf become ±max_normal and NaN stays NaN.
    """
    product = (x.to(torch.float64) * scale.to(torch.float64)).to(torch.float32).to(torch.float64)
    return round_to_element(product, fmt).to(torch.float32)


def inverse_scale(scale: torch.Tensor) -> torch.Tensor:
    """``fl32(1 / scale)``: the factor that decodes per-tensor FP8 values."""
    return (1.0 / scale.to(torch.float64)).to(torch.float32)
