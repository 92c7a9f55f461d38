"""Rich renderings shared by the CLI commands."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from newcompute.paradigm import Paradigm
from newcompute.plugins import Registry

console = Console()
err_console = Console(stderr=True)


def print_error(message: str, label: str = "Error") -> None:
    """One paragraph on stderr. Messages quote paths, regexes and library errors whose brackets rich would
    otherwise read as markup (dropping ``[0-3]``, or failing on ``[/path:12]``), so they are escaped."""
    err_console.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


def paradigms_table(registry: Registry) -> Table:
    table = Table(title="Compute paradigms")
    for column in ("paradigm", "plugin", "roles", "summary"):
        table.add_column(column)
    for paradigm in sorted(registry.paradigms.values(), key=lambda p: p.name):
        roles = ", ".join(sorted(role.value for role in paradigm.roles))
        table.add_row(paradigm.name, f"{paradigm.plugin} {paradigm.version}".strip(), roles, paradigm.summary)
    return table


def problems_table(registry: Registry) -> Table | None:
    broken = [r for r in registry.records if r.status != "ok"]
    if not broken:
        return None
    table = Table(title="Plugins with problems", title_style="bold red")
    for column in ("plugin", "version", "status", "reason"):
        table.add_column(column)
    for record in broken:
        table.add_row(record.distribution, record.version, record.status, record.error)
    return table


def _type_name(annotation: Any) -> str:
    """A short, readable type: ``'floor' | 'ceil'`` for a Literal, ``int`` for a class, else typing's repr."""
    if get_origin(annotation) is Literal:
        return " | ".join(repr(v) for v in get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, Any, str]]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_fields(annotation, dotted + "."))
            continue
        rows.append((dotted, _type_name(annotation), field.get_default(call_default_factory=True), field.description or ""))
    return rows


def config_table(paradigm: Paradigm) -> Table:
    table = Table(title=f"{paradigm.name}: {paradigm.summary}")
    for column in ("field", "type", "default", "description"):
        table.add_column(column)
    for dotted, type_name, default, description in _fields(paradigm.config):
        table.add_row(dotted, type_name, repr(default), description)
    table.add_row("include", "list[str]", "['*']", "Module-name patterns the paradigm may touch (core rule).")
    table.add_row("exclude", "list[str]", "['lm_head']", "Patterns it must not touch; wins over include (core rule).")
    return table
