"""Command-line flags derived from the run config's fields, so that each setting is declared once.

Every field of :class:`~newcompute.config.ModelSettings`,
:class:`~newcompute.config.DataSettings` and
:class:`~newcompute.config.TrainSettings` that has a ``description`` is a
flag of ``newcompute train``: ``train.lora_rank`` is ``--lora-rank``, its
help is the description, its default the field's, and it sits in the help
panel of its table. ``json_schema_extra=flag(...)`` (in
:mod:`newcompute.config`) renames it, adds a short form or puts it on
``eval``/``transform`` too; ``json_schema_extra=NO_FLAG`` keeps a described
field off the command line. So adding a field with a description is all a
new flag takes.

A flag's value becomes a ``--set TABLE.FIELD=VALUE`` override, applied after
the run file and ``--set``, so flags, files and ``--set`` share one
validation and one error message (exit 2, naming the field). Types map as:
int, float and text as themselves; a bool as ``--x/--no-x``; a ``Literal`` as
text listing its choices; ``X | None`` as ``X``; a list or tuple as a
repeatable flag that also splits on commas; anything else as text for the
model to validate.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import tomli_w
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from newcompute.config import RunConfig

F = TypeVar("F", bound=Callable[..., Any])

PANELS = {"model": "Model", "data": "Data", "train": "Training"}
"""The config tables that give flags, in help order, with the help panel each one's flags appear in."""

_LONGEST_METAVAR = 24
"""Longer lists of choices go into the help text: as a metavar they would squeeze the help column."""


@dataclass(frozen=True)
class ConfigFlag:
    """One config field as a command-line option."""

    key: str
    """``table.field``, as ``--set`` spells it."""
    names: tuple[str, ...]
    """The option strings: ``--name`` (``--name/--no-name`` for a bool), then the short form, if any."""
    parameter: str
    annotation: Any
    choices: tuple[Any, ...] = ()
    is_list: bool = False

    def override(self, value: Any) -> str:
        """The ``--set`` text for the value the user gave."""
        if self.is_list:
            value = [item.strip() for raw in value for item in str(raw).split(",") if item.strip()]
        elif self.choices:
            value = next((choice for choice in self.choices if str(choice) == value), value)
        return override(self.key, value)


def override(key: str, value: Any) -> str:
    """``--set`` text that sets ``key`` to exactly ``value`` (quoted and escaped as TOML), on one line."""
    return f"{key}={_literal(value)}"


def _literal(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return annotation


def _flag(table: str, name: str, field: FieldInfo, command: str) -> ConfigFlag | None:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    spec = extra.get("cli", {})
    if spec is None or not field.description or command not in spec.get("commands", ("train",)):
        return None
    option_name = spec.get("name") or "--" + name.replace("_", "-")
    annotation = _unwrap_optional(field.annotation)
    origin = get_origin(annotation)
    choices: tuple[Any, ...] = get_args(annotation) if origin is Literal else ()
    is_list = origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset)
    default = field.get_default(call_default_factory=True)
    help_text = field.description
    settings: dict[str, Any] = {"rich_help_panel": PANELS.get(table, table.capitalize())}
    if annotation is bool:
        declarations = [f"{option_name}/--no-{option_name.removeprefix('--')}"]
        cli_type: Any = bool
    else:
        declarations = [option_name]
        if choices:
            cli_type, settings["metavar"] = str, "|".join(str(c) for c in choices)
            if len(settings["metavar"]) > _LONGEST_METAVAR:
                settings["metavar"] = "CHOICE"
                help_text += " One of: " + ", ".join(str(c) for c in choices) + "."
        elif is_list:
            cli_type = list[str]
        else:
            cli_type = annotation if annotation in (int, float, str) else str
        if default is not None:
            # Typer's own default display needs the option to default to the value, but then every
            # option would always be given and override the run file; so the help states it.
            help_text += f" [default: {default}]"
    if spec.get("short"):
        declarations.append(spec["short"])
    annotated = Annotated[cli_type | None, typer.Option(*declarations, help=escape(help_text), **settings)]
    return ConfigFlag(f"{table}.{name}", tuple(declarations), f"{table}_{name}", annotated, choices, is_list)


def run_tables() -> dict[str, type[BaseModel]]:
    """The run config's tables that give flags, in :data:`PANELS` order."""
    tables = {}
    for table in PANELS:
        model = RunConfig.model_fields[table].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        tables[table] = model
    return tables


def config_flags(command: str, tables: dict[str, type[BaseModel]] | None = None) -> list[ConfigFlag]:
    """The flags ``command`` takes from the fields of ``tables`` (default: the run config's)."""
    flags = []
    for table, model in (tables or run_tables()).items():
        for name, field in model.model_fields.items():
            found = _flag(table, name, field, command)
            if found is not None:
                flags.append(found)
    return flags


def _option_names(parameter: inspect.Parameter) -> list[str]:
    """The option strings Typer gives a command's own parameter (none for an argument)."""
    infos = [m for m in getattr(parameter.annotation, "__metadata__", ()) if isinstance(m, typer.models.ParameterInfo)]
    if not infos or not isinstance(infos[0], typer.models.OptionInfo):
        return [] if infos else ["--" + parameter.name.replace("_", "-")]
    declared = [infos[0].default] if isinstance(infos[0].default, str) else []
    declared += list(infos[0].param_decls or ())
    names = [name for item in declared for name in item.split("/")]
    return names or ["--" + parameter.name.replace("_", "-")]


def with_config_flags(command: str, tables: dict[str, type[BaseModel]] | None = None) -> Callable[[F], F]:
    """Give a command one option per config flag of ``command``.

    The decorated function declares ``flags: list[str]`` instead: the
    ``--set`` overrides of the flags that were given, in declaration order.
    Its own options keep their place; a clash with a config flag's name is a
    programming error, raised at import.
    """

    def decorate(function: F) -> F:
        own = inspect.signature(function, eval_str=True)
        derived = config_flags(command, tables)
        taken = {name for p in own.parameters.values() for name in _option_names(p)}
        clashes = taken & {name for flag in derived for declaration in flag.names for name in declaration.split("/")}
        if clashes:
            raise TypeError(f"{function.__name__}: its options {sorted(clashes)} clash with config flags")

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = [(flag, kwargs.pop(flag.parameter, None)) for flag in derived]
            overrides = [flag.override(value) for flag, value in given if value is not None and value != []]
            return function(*args, flags=overrides, **kwargs)

        parameters = [p for p in own.parameters.values() if p.name != "flags"]
        parameters += [
            inspect.Parameter(flag.parameter, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=flag.annotation)
            for flag in derived
        ]
        wrapper.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper  # type: ignore[return-value]

    return decorate
