"""A sweep grid: a base run plus axes, expanded into one validated run config per point.

A grid file is TOML::

    [sweep]
    base = "run.toml"              # optional: a run file (relative to the grid) under [base]
    output_dir = "sweeps/mx-bits"  # optional: default sweeps/<grid file name>
    baseline = { paradigms = [] }  # optional: the axis values of the points Δ is measured against

    [base]                         # optional: run-file tables merged over sweep.base
    model = { name = "tiny", init = "scratch" }
    train = { steps = 40 }

    [axes]                         # the product of every axis is the grid
    paradigms = [[], "optical", ["mxfp8", "normuon"]]
    "paradigm.optical.fc.q_levels" = [64, 256]
    seed = [0, 1]

``paradigms`` lists paradigm lists (a name alone is a list of one, ``[]``
the baseline without paradigms); ``seed``, ``lr`` and ``model`` are short
for ``train.seed``, ``train.lr`` and ``model.name``; any other key is a
dotted run-config path, as ``--set`` spells it. An axis on a paradigm's
field varies only the points that apply that paradigm, so the points that
do not are not repeated. Every point is validated (fields, paradigm names
and configs, paradigms that cannot go together) before anything runs, and
an error names the axis and value that caused it.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from newcompute.config import RunConfig, format_validation_error, read_toml, resolve_paradigms
from newcompute.errors import ConfigError
from newcompute.paradigm import Role
from newcompute.plugins import Registry, did_you_mean

PARADIGMS_AXIS = "paradigms"
ALIASES = {"seed": ("train", "seed"), "lr": ("train", "lr"), "model": ("model", "name")}
"""Short axis names for the settings a study varies most, and the run-config path each one means."""

SWEEP_KEYS = ("base", "output_dir", "baseline")
SWEEPS_ROOT = Path("sweeps")
OWNED_BY_THE_SWEEP = (("train", "output_dir"),)
"""Settings the sweep decides itself: each point's run folder is its place in the sweep folder."""


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: a setting and the values it takes."""

    key: str
    """As written in the grid file: ``paradigms``, an alias or a dotted run-config path."""
    path: tuple[str, ...]
    """The run-config path it sets (empty for the paradigms axis)."""
    values: tuple[Any, ...]
    label: str = ""
    """Its name inside point names: the alias or the path's last part, or the whole key where those collide."""

    @property
    def paradigm(self) -> str | None:
        """The paradigm whose field this axis sets, if it sets one (only points applying it vary)."""
        return self.path[1] if len(self.path) > 2 and self.path[0] == "paradigm" else None


@dataclass(frozen=True)
class Point:
    """One run of the sweep: the axis values that apply to it and its full run config."""

    name: str
    values: dict[str, Any]
    paradigms: tuple[str, ...]
    config: dict[str, Any]
    """The run config as a TOML-ready table (``train.output_dir`` is set by the sweep folder)."""

    def run_config(self) -> RunConfig:
        return RunConfig.model_validate(self.config)


@dataclass(frozen=True)
class Grid:
    source: Path
    base: dict[str, Any]
    axes: tuple[Axis, ...]
    output_dir: Path
    baseline: dict[str, Any] | None = None
    table: dict[str, Any] = field(default_factory=dict)
    """The grid file as read, kept in the sweep manifest."""


def _where(grid: Path, axis: str | None = None) -> str:
    return f"Sweep grid {grid}" + (f", axis '{axis}'" if axis else "")


def _paradigm_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ConfigError(f"{where}: {value!r} lists '{twice[0]}' twice. Name each paradigm once.")
        return tuple(value)
    raise ConfigError(
        f"{where}: {value!r} is not a paradigm list. Each value is a paradigm name, a list of names "
        '(["mxfp8", "normuon"]) or [] for the baseline without paradigms.'
    )


def _axis(grid: Path, key: str, values: Any) -> Axis:
    where = _where(grid, key)
    if not isinstance(values, list):
        raise ConfigError(f"{where}: expected a list of values, e.g. {key} = [0, 1]; got {values!r}.")
    if not values:
        raise ConfigError(f"{where}: the axis is empty, so the grid has no points. Give it at least one value.")
    if key == PARADIGMS_AXIS:
        values = [_paradigm_list(value, where) for value in values]
        path: tuple[str, ...] = ()
    else:
        path = ALIASES.get(key) or tuple(key.split("."))
        if not all(path):
            raise ConfigError(f"{where}: not a dotted run-config path such as train.lr or paradigm.optical.fc.q_levels")
        if path[0] not in RunConfig.model_fields or path[0] == "record":
            tables = [name for name in RunConfig.model_fields if name != "record"]
            raise ConfigError(
                f"{where}: '{path[0]}' is not a run-config table.{did_you_mean(path[0], tables)} An axis is "
                f"'{PARADIGMS_AXIS}', one of {', '.join(ALIASES)}, or a path under {', '.join(tables)}."
            )
        if path in OWNED_BY_THE_SWEEP:
            raise ConfigError(f"{where}: each point's run folder is chosen by the sweep; use [sweep] output_dir.")
        if path[0] == "paradigm" and len(path) < 3:
            raise ConfigError(f"{where}: a paradigm axis names a field, e.g. paradigm.optical.fc.q_levels.")
    if len({repr(value) for value in values}) != len(values):
        raise ConfigError(f"{where}: a value is listed twice ({values!r}); list each value once.")
    return Axis(key, path, tuple(values))


def _labelled(axes: list[Axis]) -> tuple[Axis, ...]:
    short = [axis.key if axis.key == PARADIGMS_AXIS or axis.key in ALIASES else axis.path[-1] for axis in axes]
    return tuple(
        Axis(axis.key, axis.path, axis.values, name if short.count(name) == 1 else axis.key)
        for axis, name in zip(axes, short, strict=True)
    )


def _merge(into: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def read_grid(path: Path, output_dir: Path | None = None) -> Grid:
    """Read and check a grid file's shape (the points are validated by :func:`expand`)."""
    path = path.expanduser()
    table = read_toml(path)
    unknown = sorted(set(table) - {"sweep", "base", "axes"})
    if unknown:
        raise ConfigError(
            f"{_where(path)}: unknown table '{unknown[0]}'.{did_you_mean(unknown[0], ['sweep', 'base', 'axes'])} "
            "A grid has [sweep], [base] and [axes]."
        )
    sweep = table.get("sweep", {})
    wrong = sorted(set(sweep) - set(SWEEP_KEYS))
    if wrong:
        raise ConfigError(
            f"{_where(path)}: unknown key 'sweep.{wrong[0]}'.{did_you_mean(wrong[0], SWEEP_KEYS)} "
            f"Valid keys: {', '.join(SWEEP_KEYS)}."
        )
    base: dict[str, Any] = read_toml(path.parent / sweep["base"]) if "base" in sweep else {}
    _merge(base, table.get("base", {}))
    for owned in OWNED_BY_THE_SWEEP:
        if owned[1] in base.get(owned[0], {}):
            raise ConfigError(
                f"{_where(path)}: the base sets {'.'.join(owned)}, but each point's run folder is chosen by the "
                "sweep. Remove it, and set [sweep] output_dir for the sweep folder."
            )
    axes_table = table.get("axes", {})
    if not axes_table:
        raise ConfigError(f"{_where(path)}: it has no [axes]; a sweep varies at least one setting, e.g. seed = [0, 1].")
    axes = _labelled([_axis(path, key, values) for key, values in axes_table.items()])
    baseline = sweep.get("baseline")
    if baseline is not None:
        _check_baseline(path, baseline, axes)
    elif any(axis.key == PARADIGMS_AXIS and () in axis.values for axis in axes):
        baseline = {PARADIGMS_AXIS: []}  # the run without paradigms, when the grid has one
    default_dir = SWEEPS_ROOT / path.stem
    output = output_dir or (Path(sweep["output_dir"]).expanduser() if "output_dir" in sweep else default_dir)
    return Grid(path, base, axes, output, baseline, table)


def _check_baseline(path: Path, baseline: Any, axes: Sequence[Axis]) -> None:
    keys = [axis.key for axis in axes]
    if not isinstance(baseline, dict) or not baseline:
        raise ConfigError(
            f"{_where(path)}: sweep.baseline is the axis values of the baseline, e.g. baseline = {{ paradigms = [] }}."
        )
    for key, value in baseline.items():
        if key not in keys:
            raise ConfigError(
                f"{_where(path)}: sweep.baseline names '{key}', which is not an axis.{did_you_mean(key, keys)} "
                f"Axes: {', '.join(keys)}."
            )
        axis = next(a for a in axes if a.key == key)
        wanted = _paradigm_list(value, f"{_where(path)}, sweep.baseline") if key == PARADIGMS_AXIS else value
        if wanted not in axis.values:
            raise ConfigError(
                f"{_where(path)}: sweep.baseline {key} = {value!r} is not one of the axis values {list(axis.values)}."
            )


def _set(table: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = table
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{part}' is a value, not a table")
        node = child
    node[path[-1]] = copy.deepcopy(value)


def value_text(value: Any) -> str:
    """An axis value as it appears in point names and tables: ``optical+normuon``, ``none``, ``0.001``."""
    if isinstance(value, tuple):
        return "+".join(value) or "none"
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _segment(axis: Axis, value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9_.+-]+", "-", value_text(value)).strip("-") or "x"
    return f"{axis.label}-{text}"


def _base_paradigms(base: dict[str, Any]) -> tuple[str, ...]:
    return tuple(base.get("paradigm", {}))


def _point_table(grid: Grid, values: dict[str, Any], paradigms: tuple[str, ...]) -> dict[str, Any]:
    table = copy.deepcopy(grid.base)
    known = table.get("paradigm", {})
    table["paradigm"] = {name: copy.deepcopy(known.get(name, {})) for name in paradigms}
    for axis in grid.axes:
        if axis.key in values and axis.path:
            _set(table, axis.path, values[axis.key])
    return table


def _check_point(registry: Registry, table: dict[str, Any], where: str) -> RunConfig:
    """Validate one point: settings, paradigm names and configs, and the paradigms' roles together."""
    try:
        run = RunConfig.model_validate(table)
    except ValidationError as exc:
        raise format_validation_error(exc, RunConfig, where) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        uses = resolve_paradigms(registry, run)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    optimizers = [use.name for use in uses if Role.OPTIMIZER in use.paradigm.roles]
    if len(optimizers) > 1:
        raise ConfigError(
            f"{where}: paradigms '{optimizers[0]}' and '{optimizers[1]}' both build the optimizer, and a run has "
            "one optimizer. Keep one of them in each paradigm list."
        )
    return run


def _check_axes(grid: Grid, registry: Registry) -> None:
    """Each value on its own over the base, so that an error names the axis and value that caused it."""
    base_paradigms = _base_paradigms(grid.base)
    paradigm_axis = next((a for a in grid.axes if a.key == PARADIGMS_AXIS), None)
    lists = paradigm_axis.values if paradigm_axis else (base_paradigms,)
    for axis in grid.axes:
        if axis.paradigm is not None and not any(axis.paradigm in names for names in lists):
            raise ConfigError(
                f"{_where(grid.source, axis.key)}: it sets a field of paradigm '{axis.paradigm}', which no point "
                f"applies (paradigm lists: {', '.join(value_text(v) for v in lists)})."
            )
        for value in axis.values:
            where = f"{_where(grid.source, axis.key)} = {value_text(value)!s}"
            if axis.key == PARADIGMS_AXIS:
                paradigms = value
            elif axis.paradigm is not None:
                paradigms = next(names for names in lists if axis.paradigm in names)
            else:
                paradigms = base_paradigms
            try:
                table = _point_table(grid, {axis.key: value}, paradigms)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            _check_point(registry, table, where)


def _same_values(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def expand(grid: Grid, registry: Registry) -> list[Point]:
    """Every distinct point of the grid, in axis order, each validated; raises ConfigError before any run."""
    _check_axes(grid, registry)
    points: list[Point] = []
    seen: dict[str, dict[str, Any]] = {}
    base_paradigms = _base_paradigms(grid.base)
    for combination in itertools.product(*(axis.values for axis in grid.axes)):
        chosen = dict(zip((axis.key for axis in grid.axes), combination, strict=True))
        paradigms = chosen.get(PARADIGMS_AXIS, base_paradigms)
        values = {
            axis.key: chosen[axis.key]
            for axis in grid.axes
            if axis.paradigm is None or axis.paradigm in paradigms
        }
        name = "_".join(_segment(axis, values[axis.key]) for axis in grid.axes if axis.key in values)
        if name in seen:
            if all(_same_values(seen[name].get(k), v) for k, v in values.items()):
                continue  # an axis of a paradigm this point does not apply: the same run again
            raise ConfigError(
                f"{_where(grid.source)}: two points would both be named '{name}' ({seen[name]} and {values}); "
                "make the axis values differ in letters or digits."
            )
        seen[name] = values
        table = _point_table(grid, values, paradigms)
        table.setdefault("train", {})["output_dir"] = str(grid.output_dir / "runs" / name)
        shown = ", ".join(f"{key} = {value_text(value)}" for key, value in values.items())
        run = _check_point(registry, table, f"{_where(grid.source)}, point {name} ({shown})")
        config = run.model_dump(mode="json", exclude_none=True, exclude={"record"})
        points.append(Point(name, values, tuple(paradigms), config))
    return points
