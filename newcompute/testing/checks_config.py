"""Checks on a paradigm's config model: defaults, refusals, documentation and run records.

Users name a paradigm and get its published recipe, mistype a key and get
told which one, and find every validated value in the run's
``newcompute.toml``; these checks hold a config model to that.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import tomli_w
from pydantic import BaseModel

from newcompute.errors import ConfigError, RunError
from newcompute.testing.failure import ConformanceFailure, require
from newcompute.testing.spec import ConformanceSpec

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

UNKNOWN_KEY = "definitely_not_a_field"


def _options(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(arg for arg in get_args(annotation) if arg is not type(None))
    return (annotation,)


def _wrong_value(annotation: Any) -> Any | None:
    """A value no field of this type accepts, or ``None`` where no such value is obvious."""
    options = _options(annotation)
    if all(option in (int, float) for option in options):
        return "not-a-number"
    if options == (bool,):
        return "maybe"
    if all(get_origin(option) is Literal for option in options):
        return "definitely-not-a-choice"
    if options == (str,):
        return ["not", "a", "string"]
    if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], BaseModel):
        return "not-a-table"
    return None


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    table: Any = value
    for key in reversed(path):
        table = {key: table}
    return table


def _field_tables(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        wrong = _wrong_value(info.annotation)
        if wrong is not None:
            yield ".".join(path), _nested(path, wrong)
        options = _options(info.annotation)
        if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], BaseModel):
            yield from _field_tables(options[0], path)


def generated_bad_tables(config: type[BaseModel]) -> list[tuple[str, dict[str, Any]]]:
    """``(field, table)`` pairs every config model must refuse: an unknown key, and a wrong type per field."""
    return [(UNKNOWN_KEY, {UNKNOWN_KEY: 1}), *_field_tables(config)]


def _leaf_keys(table: Mapping[str, Any]) -> set[str]:
    keys: set[str] = set()
    for key, value in table.items():
        keys.add(key)
        if isinstance(value, Mapping):
            keys |= _leaf_keys(value)
    return keys


def _refused(spec: ConformanceSpec, registry: Any, table: Mapping[str, Any], names: set[str]) -> None:
    try:
        use = spec.use(registry, {**spec.table, **table})
    except ConfigError as exc:
        message = str(exc)
        require(
            any(name in message for name in names),
            f"Paradigm {spec.paradigm!r} refused {dict(table)} but the error does not name the field "
            f"({sorted(names)}): {message}",
        )
        return
    raise ConformanceFailure(
        f"Paradigm {spec.paradigm!r} accepted the invalid table {dict(table)} (validated config: {use.config!r}). "
        "Constrain the field (pydantic Field bounds, Literal choices) and forbid unknown keys "
        "(model_config = ConfigDict(extra='forbid'))."
    )


def check_defaults_validate(spec: ConformanceSpec) -> None:
    """Naming the paradigm alone gives its recipe, and the spec's table validates."""
    registry = spec.registry()
    paradigm = spec.declared(registry)
    try:
        default = paradigm.config()
    except Exception as exc:
        raise ConformanceFailure(f"{paradigm.config.__name__}() fails without arguments: {exc}") from None
    require(
        spec.use(registry, {}).config == default,
        f"Paradigm {spec.paradigm!r}: an empty table does not resolve to the config model's defaults.",
    )
    spec.use(registry)


def check_bad_tables_rejected(spec: ConformanceSpec) -> None:
    """Each bad table is refused with a ``ConfigError`` that names the offending field."""
    registry = spec.registry()
    config = spec.declared(registry).config
    for field, table in generated_bad_tables(config):
        _refused(spec, registry, table, {field, field.rpartition(".")[2]})
    for table in spec.bad_tables:
        _refused(spec, registry, table, _leaf_keys(table))


def _none_not_default(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Fields that accept ``None`` although their default is something else."""
    found = []
    for name, info in model.model_fields.items():
        options = _options(info.annotation)
        if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], BaseModel):
            found += _none_not_default(options[0], f"{prefix}{name}.")
            continue
        accepts_none = get_origin(info.annotation) in (Union, types.UnionType) and type(None) in get_args(
            info.annotation
        )
        if accepts_none and info.get_default(call_default_factory=True) is not None:
            found.append(prefix + name)
    return found


def check_config_record_round_trip(spec: ConformanceSpec) -> None:
    """The validated config survives ``newcompute.toml``.

    TOML has no null, so a run record leaves ``None`` values out and reading
    it back gives the field's default. That is exact only when the default
    is ``None`` too: a field may accept ``None`` only as its default
    (``x: int | None = None`` for "unset"), never next to another default.
    """
    registry = spec.registry()
    misfits = _none_not_default(spec.declared(registry).config)
    require(
        not misfits,
        f"Paradigm {spec.paradigm!r}: fields {misfits} accept None but default to something else; a run record "
        "cannot hold None (TOML has no null), so reloading would give the default instead. Use a value such as 0 "
        "or false for 'off', or make None the default.",
    )
    use = spec.use(registry)
    try:
        table = use.to_table()
    except RunError as exc:
        raise ConformanceFailure(f"Paradigm {spec.paradigm!r}: {exc}") from None
    text = tomli_w.dumps({"paradigm": {spec.paradigm: table}})
    again = spec.use(registry, tomllib.loads(text)["paradigm"][spec.paradigm])
    require(
        again.config == use.config and again.rules == use.rules,
        f"Paradigm {spec.paradigm!r}: the config read back from its run record differs "
        f"({again.config!r} != {use.config!r}).",
    )


def _undocumented(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, info in model.model_fields.items():
        options = _options(info.annotation)
        if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], BaseModel):
            missing += _undocumented(options[0], f"{prefix}{name}.")
        elif not (info.description or "").strip():
            missing.append(prefix + name)
    return missing


def check_config_documented(spec: ConformanceSpec) -> None:
    """Every config field has a description, which ``newcompute show NAME`` prints."""
    missing = _undocumented(spec.declared(spec.registry()).config)
    require(
        not missing,
        f"Paradigm {spec.paradigm!r}: config fields without a description: {missing}. "
        'Use Field(default, description="...").',
    )
