"""The ``normuon`` paradigm: registration and the optimizer hook.

The optimizer (and torch with it) is imported inside the hook that builds
it: the CLI imports every plugin's entry point to list paradigms, which
then costs no torch import.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import newcompute
from newcompute import Paradigm, Role
from newcompute_normuon.config import NorMuonConfig

if TYPE_CHECKING:
    import torch

    from newcompute import CostEstimate, MatmulShape, OptimizerSettings, ParamInfo, Statistic

newcompute_api = ">=1.0,<2"

PARADIGM = Paradigm(
    name="normuon",
    summary="NorMuon (orthogonalised, per-neuron-normalised momentum) on hidden matrices, AdamW on the rest.",
    config=NorMuonConfig,
    roles=frozenset({Role.OPTIMIZER}),
    docs="docs/normuon.md",
)


@newcompute.hookimpl
def newcompute_register_paradigms() -> list[Paradigm]:
    return [PARADIGM]


def _on_cuda(params: list[ParamInfo]) -> bool:
    return any(info.param.device.type == "cuda" for info in params)


def _ns_kernel(setting: str, params: list[ParamInfo]) -> str:
    if setting != "auto":
        return setting
    return "triton" if _on_cuda(params) and importlib.util.find_spec("triton") is not None else "torch"


@newcompute.hookimpl
def newcompute_build_optimizer(
    paradigm: Paradigm, config: NorMuonConfig, params: list[ParamInfo], settings: OptimizerSettings
) -> torch.optim.Optimizer:
    from newcompute_normuon.optimizer import NorMuonAdamW
    from newcompute_normuon.wiring import build_groups

    groups = build_groups(config, params, settings)
    return NorMuonAdamW(
        groups,
        compile=config.compile,
        ns_kernel=_ns_kernel(config.ns_kernel, params),
        elementwise=config.elementwise,
        overlap=config.overlap,
        distributed=config.distributed,
    )


@newcompute.hookimpl
def newcompute_optimizer_statistics(optimizer: torch.optim.Optimizer) -> dict[str, dict[Statistic, torch.Tensor]] | None:
    from newcompute_normuon import statistics
    from newcompute_normuon.optimizer import NorMuonAdamW

    if not isinstance(optimizer, NorMuonAdamW):
        return None
    return {name: statistics.report(sums) for name, sums in optimizer.telemetry.items()}


@newcompute.hookimpl
def newcompute_estimate_cost(
    config: NorMuonConfig, layers: list[MatmulShape], model_macs_per_token: int, tokens_per_step: int
) -> CostEstimate | None:
    """The Newton–Schulz products per step as a factor on the run's matmul energy and throughput."""
    from newcompute_normuon.cost import estimate

    return estimate(config, layers, model_macs_per_token, tokens_per_step)
