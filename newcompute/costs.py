"""What the simulated hardware would cost, estimated beside the loss: matmul energy, bytes moved, throughput.

A paradigm simulates numerics; what the hardware that computes them would
save is a separate question, answered from published figures. Through the
``newcompute_estimate_cost`` hook (plugin API 1.2) a paradigm's plugin
estimates, for the matrix products the paradigm computes, three ratios to
the same products computed in bf16 on a GPU:

* ``matmul_energy_vs_bf16``: energy of those multiply-accumulates;
* ``bytes_moved_vs_bf16``: bytes of their operands;
* ``matmul_throughput_vs_bf16``: multiply-accumulates per second.

Each figure a plugin uses must cite its source (paper, table or figure);
a quantity it has no source for is left out (``None``) and said so in its
``notes``, never guessed. A paradigm whose config has a ``cost`` table
(:class:`CostOverrides`) lets the user replace any of the three with their
own figure, which the results then label as set in the config.

The core combines the paradigms: a ``"layers"`` estimate holds for the
products the paradigm computes, weighted by their share of the model's
multiply-accumulates (the rest stay at 1, bf16; throughput combines as
times do, by the weighted harmonic mean; weighting bytes by MACs is an
approximation, since a product's operand bytes are not proportional to its
MACs); a ``"run"`` estimate (an optimizer's extra work) multiplies the whole. A total that needs a quantity
some paradigm left out is not given. Everything is labelled an estimate:
nothing here is measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel
from torch import nn

from newcompute.attention import find_attention_modules
from newcompute.composer import ComposeReport
from newcompute.cost_model import LABEL, QUANTITIES, CostEstimate, CostOverrides, MatmulShape
from newcompute.layers import ReplacedLinear, is_linear_like
from newcompute.paradigm import Role
from newcompute.params import ParamKind, classify_parameters
from newcompute.plugins import Registry

COST_HOOK = "newcompute_estimate_cost"


def _linear_shapes(model: nn.Module) -> dict[str, MatmulShape]:
    shapes = {}
    for qualified, module in model.named_modules():
        name = qualified.removesuffix(".base_layer")  # under a LoRA wrapper, the paradigm's layer
        if is_linear_like(module) or isinstance(module, ReplacedLinear):
            if isinstance(module, (nn.Linear, ReplacedLinear)):
                out_features, in_features = module.out_features, module.in_features
            else:  # transformers' Conv1D stores its weight in × out
                in_features, out_features = module.weight.shape
            shapes[name] = MatmulShape(name, "linear", out_features, in_features, out_features * in_features)
    return shapes


def _attention_shapes(model: nn.Module, block_size: int) -> dict[str, MatmulShape]:
    shapes = {}
    for name, module in find_attention_modules(model):
        config = module.config.get_text_config() if hasattr(module.config, "get_text_config") else module.config
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        shapes[name] = MatmulShape(name, "attention", heads, head_dim, 2 * block_size * heads * head_dim)
    return shapes


def model_matmuls(model: nn.Module, block_size: int) -> list[MatmulShape]:
    """Every linear layer and attention module of ``model`` as a :class:`MatmulShape`."""
    return [*_linear_shapes(model).values(), *_attention_shapes(model, block_size).values()]


def _hidden_matrices(model: nn.Module) -> list[MatmulShape]:
    """The trainable 2-D weights of linear layers but the output head: what an optimizer paradigm orthogonalises."""
    return [
        MatmulShape(info.name, "matrix", *info.param.shape, 0)
        for info in classify_parameters(model)
        if info.kind is ParamKind.HIDDEN_MATRIX and info.param.dim() == 2
    ]


@dataclass
class CostReport:
    """Every paradigm's estimate and their combination, as written to ``summary.json``."""

    paradigms: dict[str, dict[str, Any]] = field(default_factory=dict)
    total: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": LABEL, "paradigms": self.paradigms, "total": self.total}

    def lines(self) -> list[str]:
        """One line per quantity for the run summary, each saying it is an estimate."""
        names = dict(zip(QUANTITIES, ("matmul energy", "bytes moved", "matmul throughput"), strict=True))
        shown = []
        for key in QUANTITIES:
            value = self.total.get(key)
            what = f"{value:.3g} × bf16" if value is not None else "not estimated (a paradigm gives no sourced figure)"
            shown.append(f"Estimated {names[key]}: {what}")
        return shown


def _overridden(estimate: CostEstimate, config: BaseModel) -> tuple[CostEstimate, list[str]]:
    overrides = getattr(config, "cost", None)
    if not isinstance(overrides, CostOverrides):
        return estimate, []
    given = {key: getattr(overrides, key) for key in QUANTITIES if getattr(overrides, key) is not None}
    if not given:
        return estimate, []
    values = asdict(estimate) | given
    values["sources"] = tuple(values["sources"])
    return CostEstimate(**values), sorted(given)


def estimate_costs(
    model: nn.Module, report: ComposeReport, registry: Registry, tokens: int, tokens_per_step: int, block_size: int
) -> CostReport | None:
    """Ask each paradigm's plugin for its estimate and combine them; None when no paradigm gives one."""
    unwrap = getattr(model, "get_base_model", None)  # a LoRA (PEFT) model: the paradigms' names are the base's
    model = unwrap() if callable(unwrap) else model
    linear = _linear_shapes(model)
    attention = _attention_shapes(model, block_size)
    total_macs = sum(s.macs_per_token for s in (*linear.values(), *attention.values()))
    result = CostReport()
    layer_share: dict[str, float] = {}
    factors: list[CostEstimate] = []
    for use in report.uses:
        owned = [linear[n] for n, owner in report.replaced.items() if owner == use.name and n in linear]
        owned += [attention[n] for n in report.attention.get(use.name, []) if n in attention]
        if Role.OPTIMIZER in use.paradigm.roles and use.name == report.optimizer_paradigm:
            owned += _hidden_matrices(model)
        if not owned:
            continue
        estimate = registry.call(
            COST_HOOK,
            use.paradigm,
            config=use.config,
            layers=owned,
            model_macs_per_token=total_macs,
            tokens=tokens,
            tokens_per_step=tokens_per_step,
        )
        if estimate is None:
            continue
        estimate, overridden = _overridden(estimate, use.config)
        share = sum(s.macs_per_token for s in owned if s.kind != "matrix") / total_macs if total_macs else 0.0
        entry = {key: getattr(estimate, key) for key in QUANTITIES}
        entry |= {"scope": estimate.scope, "share_of_macs": share, "sources": list(estimate.sources)}
        entry |= {"notes": estimate.notes, "overridden_in_config": overridden}
        result.paradigms[use.name] = entry
        if estimate.scope == "run":
            factors.append(estimate)
        else:
            layer_share[use.name] = share
    if not result.paradigms:
        return None
    for key in QUANTITIES:
        layered = [(share, result.paradigms[name][key]) for name, share in layer_share.items()]
        if any(value is None for _, value in layered) or any(getattr(f, key) is None for f in factors):
            result.total[key] = None
            continue
        rest = 1.0 - sum(share for share, _ in layered)
        if key == "matmul_throughput_vs_bf16":  # times add up: the harmonic mean, weighted by MACs
            value = 1.0 / (rest + sum(share / ratio for share, ratio in layered))
        else:
            value = rest + sum(share * ratio for share, ratio in layered)
        result.total[key] = value * math.prod(getattr(f, key) for f in factors)
    return result
