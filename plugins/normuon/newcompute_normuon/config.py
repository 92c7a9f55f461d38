"""The ``[paradigm.normuon]`` table.

Defaults are the NorMuon reference recipe (lr 0.02, momentum 0.95,
β₂ 0.95, Nesterov, five quintic Newton–Schulz steps in bfloat16). AdamW
parameters take the run's lr, betas and weight decay; per-parameter
exceptions go in ``overrides`` (first the core's classification decides,
then every matching override applies in order, later ones winning field by
field). Fused projections are declared in ``fused``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from newcompute import CostOverrides, StrictConfig, check_pattern
from newcompute_normuon.coefficients import CoefficientName


class ParamOverride(StrictConfig):
    """Options for every parameter whose qualified name matches ``pattern``.

    Unset options are left out when the table is written back (run records
    are TOML, which has no null).
    """

    pattern: str = Field(
        description="Parameter names it applies to: a glob ('*.self_attn.q_proj.weight') or 're:' and a regex."
    )
    optimizer: Literal["normuon", "adamw"] | None = Field(None, description="Which update rule trains it.")
    lr: float | None = Field(None, gt=0.0, description="Learning rate (absolute, not a multiplier).")
    betas: tuple[float, float] | None = Field(
        None, description="AdamW: (β₁, β₂). NorMuon: (momentum, β₂ of the per-row second moment)."
    )
    weight_decay: float | None = Field(None, ge=0.0, description="Decoupled weight decay, applied as lr·wd.")

    _pattern_is_valid = field_validator("pattern")(check_pattern)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class FusedMatrix(StrictConfig):
    """A parameter that stacks several logical matrices along its output dimension."""

    pattern: str = Field(
        description="Parameter names it applies to: a glob ('*.attn.c_attn.weight') or 're:' and a regex."
    )
    splits: int | tuple[int, ...] = Field(
        description="Equal part count (3 for GPT-2 c_attn) or the row count of each part, in order."
    )

    _pattern_is_valid = field_validator("pattern")(check_pattern)


class NorMuonConfig(StrictConfig):
    lr: float = Field(0.02, gt=0.0, description="Learning rate of NorMuon matrices (AdamW uses the run's lr).")
    momentum: float = Field(0.95, ge=0.0, lt=1.0, description="β of the momentum that is orthogonalised.")
    beta2: float = Field(0.95, ge=0.0, lt=1.0, description="β₂ of the per-row second moment.")
    nesterov: bool = Field(True, description="Orthogonalise the Nesterov blend (1−β)·G + β·M instead of M.")
    weight_decay: float | Literal["run"] = Field(
        "run",
        description="Decoupled weight decay for NorMuon matrices (applied as lr·wd); 'run' uses the run's weight decay.",
    )
    ns_steps: int = Field(5, ge=1, le=20, description="Newton–Schulz iterations.")
    cost: CostOverrides = Field(
        default_factory=CostOverrides, description="Your own figures in place of the Newton–Schulz cost estimate."
    )
    coefficients: CoefficientName = Field(
        "quintic", description="'quintic' (Keller Jordan's fixed) or 'polar_express' (per-iteration)."
    )
    ns_dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16", description="Working dtype of the Newton–Schulz iterations."
    )
    ns_kernel: Literal["auto", "torch", "triton"] = Field(
        "auto",
        description="Newton–Schulz products: 'torch' (cuBLAS bmm) or 'triton' (symmetric products on half the "
        "tiles, CUDA only); 'auto' picks triton on CUDA when it is installed.",
    )
    elementwise: Literal["auto", "torch", "triton"] = Field(
        "auto",
        description="Momentum and update passes: 'triton' (fused kernels, one read of each tensor, CUDA only), "
        "'torch' (torch._foreach ops); 'auto' picks triton on CUDA unless compile is on.",
    )
    overlap: bool = Field(
        False,
        description="On CUDA, run the memory-bound work (momentum, row statistics, updates, AdamW) on a second "
        "stream beside the Newton–Schulz iterations (measured 0.7 ms slower on an H100, hence off). "
        "No effect on CPU or under FSDP2.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the step's torch functions (with elementwise = 'torch' or 'auto'). Off by "
        "default: on an H100 with torch 2.11 the compiled step measured slower than eager (docs/benchmarks.md).",
    )
    distributed: Literal["auto", "off"] = Field(
        "auto",
        description="'auto' spreads the orthogonalisation over the ranks of an initialised process group; "
        "'off' makes every rank compute every matrix (replicated parameters only).",
    )
    overrides: tuple[ParamOverride, ...] = Field(
        (),
        description="Per-parameter exceptions, applied in order: {pattern, optimizer, lr, betas, weight_decay}.",
    )
    fused: tuple[FusedMatrix, ...] = Field(
        (),
        description="Parameters stacking several matrices along the output dimension, orthogonalised per block: "
        "{pattern, splits}.",
    )

    @field_validator("weight_decay")
    @classmethod
    def _decay_not_negative(cls, value: float | str) -> float | str:
        if isinstance(value, float) and value < 0.0:
            raise ValueError(f"must be 'run' or a non-negative number, got {value}")
        return value
