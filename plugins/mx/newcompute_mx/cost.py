"""Cost estimates of the MX and FP8 paradigms: operand bytes, tensor-core throughput and energy vs bf16.

Every number comes from a published source, cited where it is defined:

* **Bytes.** An operand in an element format of ``b`` bits takes ``b`` bits
  per element; an MX block adds one 8-bit E8M0 scale per ``block_size``
  elements (:data:`E8M0_SCALE_BITS`); per-tensor FP8 adds one scale per
  tensor, which is left out as negligible. bf16 takes 16 bits.
* **Throughput.** The ratio of a GPU's peak dense tensor-core rate for the
  operands' format to its bf16 rate: Hopper (H100) for per-tensor FP8, the
  first GPU that runs it natively; Blackwell (B200) for MX formats, the first
  that runs MX block scaling natively. A GEMM whose operands have different
  formats (``mxfp4``: FP4 weights × FP6 activations) is counted at the rate
  of the wider one, the only rate the datasheet gives for it; a GEMM with
  an operand left in bf16 runs at the bf16 rate. MXINT8 has no tensor-core
  rate in these datasheets, so a GEMM with an INT8 operand has no throughput
  or energy estimate.
* **Energy.** Each datasheet gives one board power for every precision, so
  at the peak rate the energy per multiply-accumulate is the inverse of the
  throughput ratio. That is all it supports: it ignores how much of the
  power the tensor cores draw.

The three GEMMs of a linear layer (forward, input gradient, weight gradient)
and the six of attention (two forward, four backward) have the same
multiply-accumulates, so a layer's ratio is their mean (energy, bytes) or the
inverse of the mean inverse (throughput: time adds up).
"""

from __future__ import annotations

import statistics

from newcompute import CostEstimate, MatmulShape

from newcompute_mx.config import FP8Config, MXConfig, QuantizedLayers
from newcompute_mx.formats import FORMATS, NO_QUANTIZATION

BF16_BITS = 16

E8M0_SCALE_BITS = 8
"""Bits of an MX block's shared scale: E8M0. OCP Microscaling Formats (MX) Specification v1.0 (2023), section 5,
the table of concrete MX-compliant formats (scale data format E8M0 for every format, block size 32)."""

H100_DENSE_TFLOPS = {"bf16": 989.4, "fp8": 1978.9}
"""Peak dense tensor-core TFLOPS of the H100 SXM5. NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022),
the table comparing the A100 and H100 SXM5: 'Peak BF16 Tensor TFLOPS' 989.4 and 'Peak FP8 Tensor TFLOPS' 1978.9
(without sparsity)."""

B200_SPARSE_PFLOPS = {"bf16": 4.5, "fp8": 9.0, "fp6": 9.0, "fp4": 18.0}
"""Peak tensor-core PFLOPS of one B200, with sparsity (dense is half of each, so the ratios are the same). NVIDIA
HGX B200 datasheet (2024), 'Individual Blackwell GPU Specifications': FP16/BF16 4.5, FP8/FP6 9, FP4 18."""

SOURCES_MX = (
    "OCP Microscaling Formats (MX) Specification v1.0 (2023), section 5: E8M0 scale per 32-element block",
    "NVIDIA HGX B200 datasheet (2024), Individual Blackwell GPU Specifications: FP16/BF16 4.5, FP8/FP6 9, FP4 18 "
    "PFLOPS (sparse), one board power for all",
)
SOURCES_FP8 = (
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), A100 vs H100 SXM5 table: peak dense BF16 989.4, "
    "FP8 1978.9 tensor TFLOPS, one board power for all",
)

_FAMILY = {"e4m3": "fp8", "e5m2": "fp8", "e3m2": "fp6", "e2m3": "fp6", "e2m1": "fp4"}
_WIDTH = {"fp4": 4, "fp6": 6, "fp8": 8}

GEMMS = (("fwd_input", "fwd_weight"), ("dgrad_grad_output", "dgrad_weight"), ("wgrad_grad_output", "wgrad_input"))
"""The operand roles of each GEMM of a linear layer (see :data:`newcompute_mx.config.ROLES`)."""
ATTENTION_GEMMS = 6
"""Q·Kᵀ and P·V forward, and two gradient GEMMs for each backward."""


def _operand_bits(fmt: str, config: QuantizedLayers) -> float:
    if fmt == NO_QUANTIZATION:
        return BF16_BITS
    scale = E8M0_SCALE_BITS / config.block_size if isinstance(config, MXConfig) else 0.0
    return FORMATS[fmt].bits + scale


def _rate(a: str, b: str, config: QuantizedLayers) -> float | None:
    """The GEMM's tensor-core rate ÷ bf16, or None for an operand format no datasheet gives a rate for."""
    if NO_QUANTIZATION in (a, b):
        return 1.0
    if a == "int8" or b == "int8":
        return None
    if isinstance(config, FP8Config):
        return H100_DENSE_TFLOPS["fp8"] / H100_DENSE_TFLOPS["bf16"]
    wider = max((_FAMILY[a], _FAMILY[b]), key=_WIDTH.__getitem__)
    return B200_SPARSE_PFLOPS[wider] / B200_SPARSE_PFLOPS["bf16"]


def _gemms(layer: MatmulShape, config: QuantizedLayers) -> list[tuple[str, str]]:
    if layer.kind == "attention":
        return [(config.attention_format, config.attention_format)] * 2 + [
            (config.attention_grad_format, config.attention_format)
        ] * (ATTENTION_GEMMS - 2)
    formats = config.role_formats(layer.name)
    return [(formats[x], formats[w]) for x, w in GEMMS]


def estimate(config: QuantizedLayers, layers: list[MatmulShape]) -> CostEstimate:
    """Ratios to bf16 over ``layers``, weighted by their multiply-accumulates."""
    weights: list[int] = []
    bits: list[float | None] = []
    inverse_rates: list[float | None] = []  # time, and energy, per MAC ÷ bf16
    for layer in layers:
        gemms = _gemms(layer, config)
        rates = [_rate(a, b, config) for a, b in gemms]
        weights.append(layer.macs_per_token)
        bits.append(statistics.fmean(_operand_bits(f, config) for gemm in gemms for f in gemm) / BF16_BITS)
        known = [r for r in rates if r is not None]
        inverse_rates.append(statistics.fmean(1 / r for r in known) if len(known) == len(rates) else None)
    total = sum(weights) or 1

    def weighted(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        if len(known) != len(values):
            return None
        return sum(w * v for w, v in zip(weights, known, strict=True)) / total

    mean_time = weighted(inverse_rates)
    notes = (
        "Energy per MAC is taken as the inverse of the peak-rate ratio at equal board power; bytes count operand "
        "elements and MX scales. A GEMM of mixed formats is counted at the wider format's rate."
    )
    if mean_time is None:
        notes += " MXINT8 has no tensor-core rate in the cited datasheets: its energy and throughput are not estimated."
    fp8 = isinstance(config, FP8Config)
    return CostEstimate(
        matmul_energy_vs_bf16=mean_time,
        bytes_moved_vs_bf16=weighted(bits),
        matmul_throughput_vs_bf16=None if mean_time is None else 1 / mean_time,
        scope="layers",
        sources=SOURCES_FP8 if fp8 else SOURCES_MX,
        notes=notes,
    )

