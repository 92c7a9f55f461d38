"""Shared builders for the normuon tests (no test functions here)."""

from __future__ import annotations

from typing import Any

import torch

import newcompute
import newcompute_normuon.plugin as plugin


def registry() -> newcompute.Registry:
    """A registry holding only this plugin, registered directly (no entry points)."""
    reg = newcompute.Registry()
    record = reg.register(plugin, name="normuon")
    assert record.status == "ok", record.error
    return reg


def normuon_group(params: list[Any], **options: Any) -> dict[str, Any]:
    """A NorMuon group with every option spelled out, float32 Newton–Schulz unless overridden."""
    group = {
        "optimizer": "normuon", "lr": 0.02, "weight_decay": 0.0, "momentum": 0.95, "beta2": 0.95,
        "nesterov": True, "ns_steps": 5, "coefficients": "quintic", "ns_dtype": "float32",
        "transposed": False, "splits": None, "name": "", "params": params,
    }
    return group | options


def scalar_newton_schulz(values: torch.Tensor, coefficients: str, steps: int = 5) -> torch.Tensor:
    """What the iteration does to singular values: the scalar polynomial, iterated, in float64."""
    from newcompute_normuon import schedule

    plan = schedule(coefficients, steps)
    x = values.double() / (values.double().norm() * plan.norm_scale + plan.eps)
    for a, b, c in plan.steps:
        x = a * x + b * x**3 + c * x**5
    return x


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


BF16_RELATIVE_TOLERANCE = 0.04
"""Relative Frobenius error allowed between a bfloat16 Newton–Schulz update and the float32 reference.

bfloat16 keeps 8 significant bits (unit roundoff 2⁻⁸ ≈ 0.4 %). Five
iterations round X, XXᵀ and the polynomial to bfloat16 each time, and the
quintic's slope (3.4 near zero) amplifies the error of small singular
values; measured on CPU the result differs from float32 by 0.8–2 %
(relative Frobenius norm), for both coefficient sets and for well- and
ill-conditioned inputs, and an emulation of the Triton path's rounding
points gives the same range. 4 % is twice the worst case observed: a real
bug (wrong row, wrong scale, missing transpose) moves the update by O(100 %).
The GPU tests hold the CUDA step (cuBLAS and Triton, eager and compiled) to
this bound.
"""
