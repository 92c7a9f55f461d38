"""Which layers must stay exact: the loss with a paradigm on one unit alone, and without it on one unit alone.

A unit is one replaced layer or one intercepted attention module (or, with
``unit="block"``, every such module of one transformer block). The model is
transformed once; a unit is made exact by routing its product through the
exact computation (``F.linear`` with the layer's own weights, plain
``matmul`` for attention), so no configuration needs a second model. Every
loss is measured on the same batches inside :func:`newcompute.evaluate.unchanged`,
which restores the paradigms' state and seeds their random numbers, so the
whole analysis is a function of the weights, the data and the seed.

The plan is greedy: starting from the paradigm everywhere, units are made
exact in the order of how much removing the paradigm from each alone helps,
until the loss is within ``budget`` nats of the exact model's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tomli_w
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from newcompute.attention import MATMULS_ATTR
from newcompute.composer import report_of
from newcompute.config import ParadigmUse, RunConfig
from newcompute.errors import ConfigError
from newcompute.evaluate import unchanged
from newcompute.layers import ReplacedLinear

_BLOCK = re.compile(r"^(.*?\.\d+)(?:\.|$)")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass(frozen=True)
class Unit:
    """What is switched together: a name (a layer, an attention module or a block) and the modules in it."""

    name: str
    members: tuple[str, ...]
    paradigms: tuple[str, ...]


@dataclass(frozen=True)
class UnitSensitivity:
    unit: Unit
    alone: float
    """Loss increase over the exact model with the paradigm on this unit only."""
    removed: float
    """Loss decrease from the paradigm everywhere when this unit alone is exact."""


@dataclass
class SensitivityReport:
    exact_loss: float
    full_loss: float
    budget: float
    units: list[UnitSensitivity]
    excluded: list[Unit] = field(default_factory=list)
    plan_loss: float = 0.0
    within_budget: bool = True

    def ranked(self) -> list[UnitSensitivity]:
        """Most harmful first: by the loss the unit costs alone, then by what removing it gains."""
        return sorted(self.units, key=lambda u: (-u.alone, -u.removed, u.unit.name))


def owned_units(model: nn.Module, unit: str = "layer") -> list[Unit]:
    """The units of a transformed model, in model order; ``unit`` is ``"layer"`` or ``"block"``."""
    report = report_of(model)
    if report is None:
        raise ConfigError("The model was not transformed: give --paradigm (a layer or attention paradigm).")
    owners = dict(report.replaced)
    for paradigm, names in report.attention.items():
        owners.update(dict.fromkeys(names, paradigm))
    if not owners:
        what = (
            f"The paradigms {', '.join(report.paradigms)} replaced no layer and no attention module"
            if report.paradigms
            else "No paradigm was applied"
        )
        raise ConfigError(
            f"{what}: sensitivity compares a layer or attention paradigm with exact arithmetic layer by layer; "
            "give one, e.g. --paradigm mxfp4."
        )
    order = [name for name, _ in model.named_modules() if name in owners]
    groups: dict[str, list[str]] = {}
    for name in order:
        key = name
        if unit == "block":
            found = _BLOCK.match(name)
            key = found.group(1) if found else name
        groups.setdefault(key, []).append(name)
    return [
        Unit(key, tuple(members), tuple(dict.fromkeys(owners[m] for m in members)))
        for key, members in groups.items()
    ]


def _exact_forward(module: ReplacedLinear) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the unmodified layer computes, with the replacement's own weights."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight = module.weight_out_in()
        return F.linear(x, weight, module.bias)

    return forward


@contextmanager
def exact_modules(model: nn.Module, names: set[str]) -> Iterator[None]:
    """Inside the block, the modules ``names`` compute exactly (layers through ``F.linear``, attention plainly)."""
    patched: list[tuple[nn.Module, tuple[str, ...]]] = []
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, ReplacedLinear):
            module.forward = _exact_forward(module)  # type: ignore[method-assign]
            patched.append((module, ("forward",)))
        matmuls = module._modules.get(MATMULS_ATTR)
        if matmuls is not None:
            matmuls.qk = lambda q, k: torch.matmul(q, k.transpose(-1, -2))
            matmuls.pv = lambda p, v: torch.matmul(p, v)
            matmuls.attend = lambda *args, **kwargs: None
            patched.append((matmuls, ("qk", "pv", "attend")))
    try:
        yield
    finally:
        for module, attrs in patched:
            for attr in attrs:
                module.__dict__.pop(attr, None)


class LossMeter:
    """The mean next-token loss of fixed batches, under any choice of exact modules."""

    def __init__(
        self, model: nn.Module, blocks: np.ndarray, micro_batch_size: int, accelerator: Accelerator, seed: int
    ) -> None:
        if blocks.ndim != 2 or blocks.shape[0] == 0:
            raise ConfigError("There are no blocks to measure on: the data gave no sequences of the block size.")
        self.model = model
        self.batches = [
            torch.as_tensor(blocks[i : i + micro_batch_size], dtype=torch.long, device=accelerator.device)
            for i in range(0, blocks.shape[0], micro_batch_size)
        ]
        self.accelerator = accelerator
        self.seed = seed
        self.passes = 0

    def loss(self, exact: set[str]) -> float:
        total = torch.zeros((), dtype=torch.float64, device=self.accelerator.device)
        predicted = 0
        with unchanged(self.model, self.seed), torch.no_grad(), exact_modules(self.model, exact):
            for batch in self.batches:
                with self.accelerator.autocast():
                    loss = self.model(input_ids=batch, labels=batch, use_cache=False).loss
                count = batch.shape[0] * (batch.shape[1] - 1)
                total += loss.double() * count
                predicted += count
        self.passes += 1
        return float(total) / predicted


def analyse(meter: LossMeter, units: list[Unit], budget: float) -> SensitivityReport:
    """Every unit alone and removed alone, then the greedy plan within ``budget`` nats of the exact loss."""
    everything = {m for u in units for m in u.members}
    exact_loss = meter.loss(everything)
    full_loss = meter.loss(set())
    measured = [
        UnitSensitivity(
            unit,
            alone=meter.loss(everything - set(unit.members)) - exact_loss,
            removed=full_loss - meter.loss(set(unit.members)),
        )
        for unit in units
    ]
    report = SensitivityReport(exact_loss, full_loss, budget, measured, plan_loss=full_loss)
    limit = exact_loss + budget
    excluded: list[Unit] = []
    exact: set[str] = set()
    for candidate in sorted(measured, key=lambda u: (-u.removed, -u.alone, u.unit.name)):
        if report.plan_loss <= limit:
            break
        excluded.append(candidate.unit)
        exact |= set(candidate.unit.members)
        report.plan_loss = meter.loss(exact) if exact != everything else exact_loss
    report.excluded = excluded
    report.within_budget = report.plan_loss <= limit
    return report


def exclude_pattern(unit: Unit, unit_kind: str) -> str:
    """The rule that excludes exactly ``unit``: its name (``NAME.*`` for a block), escaped if it needs it."""
    block = unit_kind == "block" and unit.name not in unit.members
    if _PLAIN_NAME.match(unit.name):
        return f"{unit.name}.*" if block else unit.name
    escaped = re.escape(unit.name)
    return f"re:{escaped}(\\..*)?" if block else f"re:{escaped}"


def plan_document(run: RunConfig, uses: list[ParadigmUse], report: SensitivityReport, unit_kind: str) -> str:
    """A run TOML that ``newcompute train --config`` takes as it is: ``run`` with the plan's exclude rules."""
    document: dict[str, Any] = {
        table: getattr(run, table).model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        for table in ("model", "data", "train")
    }
    document["model"] = {"name": run.model.name, **document["model"]}
    document = {table: values for table, values in document.items() if values}
    paradigms: dict[str, Any] = {}
    for use in uses:
        table = {k: v for k, v in run.paradigm.get(use.name, {}).items() if k not in ("include", "exclude")}
        added = [exclude_pattern(u, unit_kind) for u in report.excluded if use.name in u.paradigms]
        table["include"] = list(use.rules.include)
        table["exclude"] = [*use.rules.exclude, *(p for p in added if p not in use.rules.exclude)]
        paradigms[use.name] = table
    document["paradigm"] = paradigms
    header = (
        f"# newcompute sensitivity: the paradigm everywhere but {len(report.excluded)} unit(s), loss "
        f"{report.plan_loss:.4f} against {report.exact_loss:.4f} exact (budget {report.budget:g} nats"
        f"{'' if report.within_budget else ', not reached'}).\n"
    )
    return header + tomli_w.dumps(document)
