"""What a cost estimate is: the shapes a paradigm's plugin is asked about and the estimate it returns.

Kept apart from :mod:`newcompute.costs` (which measures a model and needs
torch) so that a plugin's config can hold :class:`CostOverrides` and its
entry point still imports without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from newcompute.paradigm import StrictConfig

QUANTITIES = ("matmul_energy_vs_bf16", "bytes_moved_vs_bf16", "matmul_throughput_vs_bf16")
LABEL = "estimated from published figures, not measured"


@dataclass(frozen=True)
class MatmulShape:
    """One matrix product of the model (or, for an optimizer paradigm, one matrix it updates).

    ``kind`` is ``"linear"`` (``rows`` = out_features, ``cols`` = in_features),
    ``"attention"`` (both products of one attention module: ``rows`` = heads,
    ``cols`` = head dimension) or ``"matrix"`` (a trained matrix, ``rows`` × ``cols``).
    ``macs_per_token`` counts the forward multiply-accumulates per token (for
    attention at the run's block size: Q·Kᵀ and P·V over the whole block).
    """

    name: str
    kind: Literal["linear", "attention", "matrix"]
    rows: int
    cols: int
    macs_per_token: int


@dataclass(frozen=True)
class CostEstimate:
    """A paradigm's estimate; every figure behind it is cited in ``sources``."""

    matmul_energy_vs_bf16: float | None = None
    bytes_moved_vs_bf16: float | None = None
    matmul_throughput_vs_bf16: float | None = None
    scope: Literal["layers", "run"] = "layers"
    """``layers``: ratios for the products handed to the hook; ``run``: a factor on the whole run."""
    sources: tuple[str, ...] = ()
    notes: str = ""
    """What is left out and why, and the assumptions made."""


class CostOverrides(StrictConfig):
    """``[paradigm.NAME.cost]``: replace a paradigm's estimates with figures of your own (ratios to bf16)."""

    matmul_energy_vs_bf16: float | None = Field(None, gt=0.0, description="Energy of the paradigm's matmuls ÷ bf16.")
    bytes_moved_vs_bf16: float | None = Field(None, gt=0.0, description="Operand bytes of its matmuls ÷ bf16.")
    matmul_throughput_vs_bf16: float | None = Field(None, gt=0.0, description="Its matmul throughput ÷ bf16.")
