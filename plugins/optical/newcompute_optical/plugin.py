"""The ``optical`` paradigm's hook implementations (entry point ``newcompute: optical``).

The layers (and torch with them) are imported inside the hooks that build
them: the CLI imports every plugin's entry point to list paradigms, which
then costs no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import newcompute
from newcompute import Paradigm, Role, hookimpl
from newcompute_optical.config import OpticalConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from newcompute import AttentionMatmuls, CostEstimate, MatmulShape, Statistic

newcompute_api = ">=1.0,<2"

PARADIGM = Paradigm(
    name="optical",
    summary="Optical transformer (Anderson et al. 2023): limited-precision operands and a noisy read-out "
    "in every linear layer but the head and in both attention products.",
    config=OpticalConfig,
    roles=frozenset({Role.LAYER, Role.ATTENTION}),
    docs="docs/optical.md",
    capturable=True,  # ranges, statistics and the noise counter are buffers updated on the device
)


@hookimpl
def newcompute_register_paradigms() -> list[Paradigm]:
    return [PARADIGM]


@hookimpl
def newcompute_replace_layer(config: OpticalConfig, name: str, module: nn.Module) -> nn.Module | None:
    from newcompute_optical.layer import OpticalLinear

    return OpticalLinear(module, config.fc, name) if newcompute.is_linear_like(module) else None


@hookimpl
def newcompute_attention_matmuls(config: OpticalConfig, name: str) -> AttentionMatmuls:
    from newcompute_optical.attention import OpticalAttentionMatmuls

    return OpticalAttentionMatmuls(config.attention, name)


@hookimpl
def newcompute_statistics(module: nn.Module) -> dict[Statistic, torch.Tensor] | None:
    from newcompute_optical import statistics
    from newcompute_optical.attention import OpticalAttentionMatmuls
    from newcompute_optical.layer import OpticalLinear

    if isinstance(module, OpticalLinear):
        return None if module.settings.q_bypass else statistics.report(module.optical.telemetry)
    if isinstance(module, OpticalAttentionMatmuls) and not module.settings.q_bypass:
        return {**statistics.report(module.scores.telemetry, "qk_"), **statistics.report(module.context.telemetry, "pv_")}
    return None


@hookimpl
def newcompute_estimate_cost(config: OpticalConfig, layers: list[MatmulShape]) -> CostEstimate:
    """Operand bytes vs bf16; energy and throughput are left out (no per-layer figure is sourced)."""
    from newcompute_optical.cost import estimate

    return estimate(config, layers)
