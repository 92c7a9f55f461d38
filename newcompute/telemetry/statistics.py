"""Paradigm-declared statistics: what each replaced layer or attention product reports.

A paradigm's modules accumulate their statistics on the device; this
module asks each owning plugin for them (``newcompute_statistics``) only
when telemetry is read, checks what came back, and names the plugin and
layer when something is wrong, so a broken plugin never yields a silent
NaN in a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from newcompute.attention import MATMULS_ATTR
from newcompute.composer import report_of
from newcompute.config import ParadigmUse
from newcompute.errors import RunError
from newcompute.paradigm import Role
from newcompute.plugins import Registry, get_registry


@dataclass(frozen=True)
class Statistic:
    """A statistic's identity: ``name`` (snake_case), a one-line ``description``, its ``unit``.

    ``unit`` is a short word such as ``"fraction"``, ``"dB"``, ``"count"``
    or ``"ratio"``; tables and plots print it next to the value.

    ``bins`` makes it a vector statistic: its value is a 1-D tensor with one
    entry per bin, ``bins[i]`` labelling entry ``i`` (the value a histogram
    bin counts, or the position in a history). With ``unit="count"`` it is a
    histogram (trackers that draw histograms get one); otherwise a series.
    Empty (the default): a scalar, a 0-d tensor.
    """

    name: str
    description: str
    unit: str
    bins: tuple[float, ...] = ()

    @property
    def is_vector(self) -> bool:
        return bool(self.bins)

    @property
    def is_histogram(self) -> bool:
        return bool(self.bins) and self.unit == "count"


@dataclass(frozen=True)
class LayerStatistic:
    """One value read from one layer (or attention product) of a transformed model (a list for a vector)."""

    layer: str
    paradigm: str
    statistic: Statistic
    value: float | list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "paradigm": self.paradigm,
            "statistic": self.statistic.name,
            "description": self.statistic.description,
            "unit": self.statistic.unit,
            **({"bins": list(self.statistic.bins)} if self.statistic.is_vector else {}),
            "value": self.value,
        }


def _owned_modules(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(layer name, paradigm, module) for every replacement and attached attention matmuls."""
    report = report_of(model)
    if report is None:
        return []
    owned = [(name, paradigm, _unwrapped(model.get_submodule(name))) for name, paradigm in report.replaced.items()]
    for paradigm, names in report.attention.items():
        owned += [(name, paradigm, model.get_submodule(name).get_submodule(MATMULS_ATTR)) for name in names]
    return owned


def _unwrapped(module: nn.Module) -> nn.Module:
    """The paradigm's own layer inside a LoRA wrapper (PEFT's ``get_base_layer``), else ``module``."""
    base = getattr(module, "get_base_layer", None)
    return base() if callable(base) else module


def _module_device(module: nn.Module) -> torch.device | None:
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else None


def check_statistics(paradigm: str, layer: str, module: nn.Module, reported: object) -> dict[Statistic, torch.Tensor]:
    """Refuse, naming the paradigm and layer, anything but named, described device tensors of the declared shape.

    A scalar statistic is a 0-d floating tensor; a vector one (``bins``) a
    1-D floating tensor with one entry per bin.
    """
    where = f"Paradigm '{paradigm}' (newcompute_statistics for '{layer}')"
    if not isinstance(reported, dict):
        raise RunError(
            f"{where} returned {type(reported).__name__}; return a dict of Statistic → 0-d tensor or None."
        )
    device = _module_device(module)
    for stat, value in reported.items():
        if not isinstance(stat, Statistic) or not stat.name or not stat.description.strip() or not stat.unit:
            raise RunError(
                f"{where} reported {stat!r}; each key must be a Statistic with a name, description and unit."
            )
        shape = (len(stat.bins),) if stat.is_vector else ()
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or not value.is_floating_point():
            wanted = "a 0-d floating tensor"
            if shape:
                wanted = f"a 1-D floating tensor of {len(stat.bins)} entries (its bins)"
            raise RunError(f"{where}: statistic '{stat.name}' must be {wanted}, not {value!r}.")
        if device is not None and value.device != device:
            raise RunError(f"{where}: statistic '{stat.name}' is on {value.device}, not the module's device {device}.")
    return reported


def _optimizer_statistics(
    optimizer: torch.optim.Optimizer, uses: list[ParadigmUse], registry: Registry
) -> list[tuple[str, str, dict[Statistic, torch.Tensor]]]:
    """What the optimizer paradigm (if any, and if it answers the hook) reports per parameter."""
    chosen = [use for use in uses if Role.OPTIMIZER in use.paradigm.roles]
    if not chosen:
        return []
    use = chosen[0]
    reported = registry.call("newcompute_optimizer_statistics", use.paradigm, config=use.config, optimizer=optimizer)
    if reported is None:
        return []
    if not isinstance(reported, dict):
        raise RunError(
            f"Paradigm '{use.name}' (newcompute_optimizer_statistics) returned {type(reported).__name__}; "
            "return a dict of parameter name → {Statistic: 0-d tensor} or None."
        )
    return [(str(name), use.name, stats) for name, stats in reported.items()]


def read_statistics(
    model: nn.Module,
    registry: Registry | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    uses: list[ParadigmUse] | None = None,
) -> list[LayerStatistic]:
    """Ask every owning plugin for its modules' statistics and read them (one copy to the host per device).

    With ``optimizer`` (and the run's paradigm ``uses``, which name the
    optimizer paradigm), its per-parameter statistics are read too. A
    non-finite value is refused: it means the plugin's accumulation is broken.
    """
    registry = registry or get_registry()
    report = report_of(model)
    gathered: list[tuple[str, str, Statistic, torch.Tensor]] = []
    if report is not None:
        by_name = {use.name: use for use in report.uses}
        for layer, paradigm, module in _owned_modules(model):
            use = by_name[paradigm]
            reported = registry.call(
                "newcompute_statistics", use.paradigm, config=use.config, name=layer, module=module
            )
            if reported is None:
                continue
            for stat, value in check_statistics(paradigm, layer, module, reported).items():
                gathered.append((layer, paradigm, stat, value))
    if optimizer is not None:
        all_uses = list(uses) if uses is not None else list(report.uses if report is not None else [])
        for layer, paradigm, stats in _optimizer_statistics(optimizer, all_uses, registry):
            owner = _parameter_owner(model, layer)
            for stat, value in check_statistics(paradigm, layer, owner, stats).items():
                gathered.append((layer, paradigm, stat, value))
    if not gathered:
        return []
    values, nonfinite = _host_values([(stat, value) for _, _, stat, value in gathered])
    if nonfinite is not None:
        layer, paradigm, stat, _ = gathered[nonfinite]
        raise RunError(
            f"Paradigm '{paradigm}' reported statistic '{stat.name}' = {values[nonfinite]} for '{layer}'; "
            "it must be finite."
        )
    return [LayerStatistic(layer, paradigm, stat, value) for (layer, paradigm, stat, _), value in zip(gathered, values)]


def _host_values(tensors: list[tuple[Statistic, torch.Tensor]]) -> tuple[list[float | list[float]], int | None]:
    """The tensors' values as floats (lists for vectors), with one copy to the host per device, and the index
    of the first tensor holding a non-finite value (``None`` if none does).

    Finiteness is checked on each device's flat copy at once: a per-float check in Python took a third of
    the time of reading a clm-400m MX model's statistics.

    A few hundred layers report a few statistics each: read one by one, each
    value would be a kernel and a host sync. Instead each device's values go
    into one flat tensor (one ``cat``, whose type promotion between floating
    types is exact, then one cast to float64) and, on a GPU, one
    asynchronous copy into pinned memory, waited for by one event: every
    device's copy is queued before any is waited for.
    """
    by_device: dict[torch.device, list[int]] = {}
    for index, (_, value) in enumerate(tensors):
        by_device.setdefault(value.device, []).append(index)
    copies: list[tuple[list[int], torch.Tensor, torch.cuda.Event | None]] = []
    for device, indices in by_device.items():
        flat = torch.cat([tensors[i][1].detach().reshape(-1) for i in indices]).double()
        if device.type != "cuda":
            copies.append((indices, flat, None))
            continue
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        host.copy_(flat, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(device))
        copies.append((indices, host, copied))
    values: list[float | list[float]] = [0.0] * len(tensors)
    nonfinite: int | None = None
    for indices, host, copied in copies:
        if copied is not None:
            copied.synchronize()
        read = host.tolist()
        finite = bool(torch.isfinite(host).all())
        at = 0
        for i in indices:
            stat = tensors[i][0]
            size = max(len(stat.bins), 1)
            values[i] = read[at : at + size] if stat.is_vector else read[at]
            if not finite and (nonfinite is None or i < nonfinite):
                if not all(math.isfinite(v) for v in read[at : at + size]):
                    nonfinite = i
            at += size
    return values, nonfinite


def _parameter_owner(model: nn.Module, name: str) -> nn.Module:
    """The module holding parameter ``name`` (for the device check); the model itself if the name is unknown."""
    module_name, _, _ = name.rpartition(".")
    try:
        return model.get_submodule(module_name) if module_name else model
    except AttributeError:
        return model
