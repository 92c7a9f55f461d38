"""The ``newcompute`` entry point of the bitflip plugin: declares the paradigm and replaces linear layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import newcompute as nc
from newcompute_bitflip.config import BitFlipConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

newcompute_api = ">=1.0,<2"

DOCS = """\
Every linear layer but the output head computes with operands whose bits flip at random, as
NewComputeBench's bitflip CLM experiments do (mase-triton's random_bitflip): each sign/exponent
bit and each fraction bit of the input and of the weight flips independently, with its own
probability (rounded down to a power of two), anew on every call. Inputs or weights whose
magnitude after flipping reaches the zero-out threshold, or that became NaN, are set to 0 and
pass no gradient; other gradients pass straight through. Flips are reproducible: they depend on
the seed, the layer's name and its call counter, which is saved with the model."""


@nc.hookimpl
def newcompute_register_paradigms() -> list[nc.Paradigm]:
    return [
        nc.Paradigm(
            name="bitflip",
            summary="Random bit flips in the exponent and fraction of linear-layer inputs and weights",
            config=BitFlipConfig,
            roles=frozenset({nc.Role.LAYER}),
            docs=DOCS,
            capturable=True,  # the call counter is a buffer; the kernel reads it from device memory
        )
    ]


@nc.hookimpl
def newcompute_replace_layer(
    paradigm: nc.Paradigm, config: BitFlipConfig, name: str, module: nn.Module
) -> nn.Module | None:
    from newcompute_bitflip.layer import BitFlipLinear  # imported here, so listing paradigms needs no torch

    if not nc.is_linear_like(module):
        return None
    return BitFlipLinear(module, config, name)


FLIPS = {
    "input_flips_per_call": ("input_flipped", "calls", "Input elements changed by flips per forward call", "count"),
    "weight_flips_per_call": ("weight_flipped", "calls", "Weight elements changed by flips per forward call", "count"),
    "input_flip_rate": ("input_flipped", "inputs", "Fraction of input elements changed by flips", "fraction"),
    "weight_flip_rate": ("weight_flipped", "weights", "Fraction of weight elements changed by flips", "fraction"),
}


@nc.hookimpl
def newcompute_statistics(module: nn.Module) -> dict[nc.Statistic, torch.Tensor] | None:
    """Flips per forward call (one call per step and micro-batch) and as a fraction of the elements."""
    from newcompute_bitflip.layer import BitFlipLinear

    if not isinstance(module, BitFlipLinear):
        return None
    sums = module.telemetry
    return {nc.Statistic(name, text, unit): sums.ratio(num, den) for name, (num, den, text, unit) in FLIPS.items()}


COST_NOTES = (
    "By construction, not from a published figure: the bits flip in operands of the baseline's own format and "
    "the product is the baseline's bf16 arithmetic, so energy, bytes and throughput are those of bf16 (1.0). "
    "What unreliable hardware that flips bits in exchange for a saving (e.g. run below its nominal voltage) would "
    "save is not modelled; set paradigm.bitflip.cost to use your own figures."
)


@nc.hookimpl
def newcompute_estimate_cost(config: BitFlipConfig) -> nc.CostEstimate:
    """The same bf16 products with faults injected: every ratio is 1.0 by construction, no constant cited."""
    return nc.CostEstimate(
        matmul_energy_vs_bf16=1.0,
        bytes_moved_vs_bf16=1.0,
        matmul_throughput_vs_bf16=1.0,
        scope="layers",
        notes=COST_NOTES,
    )
