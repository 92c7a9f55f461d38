"""Classifying a model's parameters for optimizer wiring.

Optimizers such as Muon/NorMuon treat hidden weight matrices differently
from embeddings, the output head, norms and biases (modded-nanogpt keeps a
per-parameter table). The core classifies once, from module types and tied
weights rather than from names, so every optimizer paradigm agrees and
works for any model family.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import nn

from newcompute.errors import ConfigError
from newcompute.layers import ReplacedLinear, is_linear_like


class ParamKind(str, enum.Enum):
    HIDDEN_MATRIX = "hidden_matrix"
    EMBEDDING = "embedding"
    OUTPUT_HEAD = "output_head"
    NORM = "norm"
    BIAS = "bias"
    OTHER = "other"


@dataclass(frozen=True)
class ParamInfo:
    """One trainable parameter and what it is.

    ``module_type`` is the class name of the owning module (after paradigm
    replacement, e.g. ``OpticalLinear``); ``source_type`` the original class
    (``Linear``, ``Conv1D``).
    """

    name: str
    param: nn.Parameter
    kind: ParamKind
    module_type: str
    source_type: str


@dataclass(frozen=True)
class OptimizerSettings:
    """The run's base optimizer hyper-parameters, which an optimizer paradigm scales."""

    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        """Refused here, naming the setting, rather than as torch's raw error or a run of NaNs."""
        problems = [
            f"{name} {value!r} must be {rule}"
            for name, value, rule, ok in (
                ("lr", self.lr, "finite and > 0", lambda v: v > 0),
                ("weight_decay", self.weight_decay, "finite and >= 0", lambda v: v >= 0),
                ("eps", self.eps, "finite and > 0", lambda v: v > 0),
                *((f"betas[{i}]", b, "in [0, 1)", lambda v: 0 <= v < 1) for i, b in enumerate(self.betas)),
            )
            if not (math.isfinite(value) and ok(value))
        ]
        if problems:
            raise ConfigError("OptimizerSettings: " + "; ".join(problems) + ".")


def _kind(module: nn.Module, leaf: str, param: torch.Tensor, head_ids: set[int]) -> ParamKind:
    if id(param) in head_ids:
        return ParamKind.OUTPUT_HEAD
    if isinstance(module, nn.Embedding):
        return ParamKind.EMBEDDING
    if "norm" in type(module).__name__.lower():
        return ParamKind.NORM
    if leaf == "bias" or (param.ndim == 1 and "bias" in leaf):
        return ParamKind.BIAS
    if param.ndim == 2 and (isinstance(module, ReplacedLinear) or is_linear_like(module)):
        return ParamKind.HIDDEN_MATRIX
    return ParamKind.OTHER


def classify_parameters(model: nn.Module) -> list[ParamInfo]:
    """Every trainable parameter of ``model``, once each, with its kind.

    A head tied to the input embedding is one parameter and is reported as
    ``EMBEDDING`` (the optimizer sees it once).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_ids = {id(head.weight)} if head is not None else set()
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embed is not None:
        head_ids.discard(id(embed.weight))
    seen: set[int] = set()
    infos: list[ParamInfo] = []
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            infos.append(
                ParamInfo(
                    name=f"{module_name}.{leaf}" if module_name else leaf,
                    param=param,
                    kind=_kind(module, leaf, param, head_ids),
                    module_type=type(module).__name__,
                    source_type=getattr(module, "source_type", type(module).__name__),
                )
            )
    return infos
