"""The optical paradigm's cost estimate: operand bytes only; energy and throughput are not sourced here.

**Bytes.** The forward product encodes both operands at ``q_levels`` levels,
``ceil(log2(q_levels))`` bits each, where bf16 takes 16; the backward is
digital and straight-through (two plain products in the training dtype), so
a layer's three products average to ``(b/16 + 1 + 1) / 3``. With
``q_bypass`` the product is exact, 16 bits. No published constant enters:
the bits follow from the config.

**Energy and throughput: not estimated.** Anderson et al., "Optical
Transformers" (arXiv 2302.10360, 2023; TMLR 2024), find in their abstract
that the optical energy per multiply-accumulate scales as 1/d with the
model width d and that well-engineered large-scale optical hardware might
reach a 100× energy advantage over digital processors at 300 fJ/MAC for
some of the largest current Transformers. That is a system-level figure for
models far wider than most runs here, not a per-layer ratio that applies to
this model, so none is derived from it. Set
``[paradigm.optical.cost] matmul_energy_vs_bf16`` (and
``matmul_throughput_vs_bf16``) to use a figure of your own.
"""

from __future__ import annotations

import math

from newcompute import CostEstimate, MatmulShape

from newcompute_optical.config import OpticalConfig, ProductSettings

BF16_BITS = 16
NOTES = (
    "Bytes: forward operands at ceil(log2(q_levels)) bits, backward digital at 16 bits. Energy and throughput "
    "are not estimated: Anderson et al. 2023 (arXiv 2302.10360) give an energy per MAC scaling as 1/d and a "
    "system-level ~100x advantage for the largest current models, not a per-layer figure for this model; set "
    "paradigm.optical.cost to use your own."
)


def forward_bits(settings: ProductSettings) -> int:
    """Bits per operand of the optical forward product."""
    return BF16_BITS if settings.q_bypass else math.ceil(math.log2(settings.q_levels))


def estimate(config: OpticalConfig, layers: list[MatmulShape]) -> CostEstimate:
    total = sum(layer.macs_per_token for layer in layers) or 1
    ratio = 0.0
    for layer in layers:
        settings = config.attention if layer.kind == "attention" else config.fc
        products = (forward_bits(settings) / BF16_BITS, 1.0, 1.0)  # forward, then the two digital backward ones
        ratio += layer.macs_per_token * sum(products) / len(products)
    return CostEstimate(bytes_moved_vs_bf16=ratio / total, scope="layers", notes=NOTES)
