"""Building a run's optimizer: the optimizer paradigm's, or AdamW.

The default keeps weight decay off embeddings, norms, biases and scalars
(decay on those hurts and is what HF's trainer avoids too) and on hidden
matrices and the output head applies the run's weight decay.
"""

from __future__ import annotations

import torch
from torch import nn

from newcompute.composer import report_of, summarize_optimizer
from newcompute.errors import RunError
from newcompute.params import OptimizerSettings, ParamInfo, ParamKind, classify_parameters
from newcompute.plugins import Registry, get_registry

_DECAYED = {ParamKind.HIDDEN_MATRIX, ParamKind.OUTPUT_HEAD}


def default_optimizer(params: list[ParamInfo], settings: OptimizerSettings) -> torch.optim.Optimizer:
    decay = [i.param for i in params if i.kind in _DECAYED]
    rest = [i.param for i in params if i.kind not in _DECAYED]
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay, "name": "adamw (decay)"},
        {"params": rest, "weight_decay": 0.0, "name": "adamw (no decay)"},
    ]
    on_cuda = all(info.param.is_cuda for info in params)
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=settings.lr,
        betas=settings.betas,
        eps=settings.eps,
        fused=on_cuda or None,
    )


def build_optimizer(
    model: nn.Module, settings: OptimizerSettings, registry: Registry | None = None
) -> torch.optim.Optimizer:
    """The optimizer for ``model``'s trainable parameters, recorded in its compose report."""
    params = classify_parameters(model)
    if not params:
        raise RunError(f"{type(model).__name__} has no trainable parameters to optimise.")
    report = report_of(model)
    owner = report.optimizer_paradigm if report else None
    if owner is None:
        optimizer = default_optimizer(params, settings)
    else:
        registry = registry or get_registry()
        use = next(u for u in report.uses if u.name == owner)
        optimizer = registry.call(
            "newcompute_build_optimizer", use.paradigm, config=use.config, params=params, settings=settings
        )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise RunError(
                f"Paradigm '{owner}' declares the optimizer role but newcompute_build_optimizer returned "
                f"{type(optimizer).__name__}; it must return a torch.optim.Optimizer."
            )
    if report is not None:
        report.optimizer_groups = summarize_optimizer(optimizer, params)
    return optimizer
