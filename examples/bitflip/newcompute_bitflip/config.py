"""The ``[paradigm.bitflip]`` table: NewComputeBench's keys, its published recipe as defaults.

Defaults follow NewComputeBench's bitflip fine-tuning config: every bit
flips with probability 2⁻¹⁶, inputs at or above 30 and weights at or above
1.25 (after flipping) are zeroed. Probabilities are rounded down to a
power of two, as upstream does, because a flip mask is the AND of n
random words (each bit set with probability 2⁻ⁿ). Zero means "off" for
both probabilities and thresholds, since a run record is TOML and TOML
has no null.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from newcompute import CostOverrides, StrictConfig

MAX_HALVES = 32
"""Flip masks are the AND of up to this many random words: probabilities down to 2⁻³²."""

RECIPE_P = 2.0**-16

_P = "Probability that each {bits} bit of a layer's {operand} flips (rounded down to 2^-n; 0 = never)."
_T = "After flipping, {operand} with |{symbol}| >= this, or NaN, become 0 and pass no gradient (0 = keep all)."


def halves(probability: float) -> int:
    """The n of the power of two 2⁻ⁿ ≤ ``probability`` actually used (0: no flips)."""
    return 0 if probability == 0 else math.ceil(-math.log2(probability))


class BitFlipConfig(StrictConfig):
    """The ``bitflip`` paradigm: how often input and weight bits flip, and what is zeroed after."""

    x_p_exp: float = Field(RECIPE_P, ge=0.0, lt=1.0, description=_P.format(bits="sign or exponent", operand="input"))
    x_p_frac: float = Field(RECIPE_P, ge=0.0, lt=1.0, description=_P.format(bits="fraction", operand="input"))
    x_zero_out_t: float = Field(30.0, ge=0.0, description=_T.format(operand="inputs", symbol="x"))
    w_p_exp: float = Field(RECIPE_P, ge=0.0, lt=1.0, description=_P.format(bits="sign or exponent", operand="weight"))
    w_p_frac: float = Field(RECIPE_P, ge=0.0, lt=1.0, description=_P.format(bits="fraction", operand="weight"))
    w_zero_out_t: float = Field(1.25, ge=0.0, description=_T.format(operand="weights", symbol="w"))
    seed: int = Field(
        0, ge=0, le=0xFFFF_FFFF,
        description="Generator key; each layer also mixes in its own name, so layers draw independent flips.",
    )
    backend: Literal["auto", "torch"] = Field(
        "auto",
        description="'auto': the Triton kernel for CUDA tensors, PyTorch elsewhere (identical bits); "
        "'torch': always PyTorch.",
    )
    cost: CostOverrides = Field(
        default_factory=CostOverrides,
        description="Your own figures for the cost estimate (by construction, every ratio is bf16's: 1.0).",
    )

    @field_validator("x_p_exp", "x_p_frac", "w_p_exp", "w_p_frac")
    @classmethod
    def _representable(cls, probability: float) -> float:
        if halves(probability) > MAX_HALVES:
            raise ValueError(f"{probability} is below 2^-{MAX_HALVES}, the smallest flip probability; use 0 for none")
        return probability
