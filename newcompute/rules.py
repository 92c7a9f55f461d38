"""Which modules a paradigm may touch: include/exclude patterns on qualified names.

Patterns are shell globs (``*.mlp.*``) or, with a ``re:`` prefix, regular
expressions matched against the whole name. A glob ending in ``.*`` also
matches the module it names (``*.self_attn.*`` covers the attention module
itself and its projections). Exclusion wins over inclusion. The name
``lm_head`` stands for the model's output head whatever it is called
(GPT-NeoX calls it ``embed_out``), so the default keeps every head intact,
as NewComputeBench does. A plugin that matches layer names in its own
config (per-layer overrides) uses :func:`name_matches` and
:func:`check_pattern`, so its patterns mean what the core's mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from newcompute.errors import ConfigError

HEAD_ALIAS = "lm_head"


def name_matches(pattern: str, name: str) -> bool:
    """Whether qualified module name ``name`` matches ``pattern``: a glob (``*.mlp.*`` also matches
    ``x.mlp``) or ``re:`` and a regular expression matched against the whole name."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatchcase(name, pattern) or fnmatchcase(name + ".", pattern)


def check_pattern(pattern: str) -> str:
    """``pattern`` itself, or ``ValueError`` saying why it is not one (for pydantic validators)."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
    return pattern


def _patterns(value: Any, key: str, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ConfigError(f"'{where}.{key}' must be a list of patterns such as [\"*.mlp.*\"], got {value!r}")
    for pattern in items:
        try:
            check_pattern(pattern)
        except ValueError as exc:
            raise ConfigError(f"'{where}.{key}': {exc}") from None
    return tuple(items)


@dataclass(frozen=True)
class Rules:
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = field(default=(HEAD_ALIAS,))

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str) -> Rules:
        """Take ``include``/``exclude`` out of a paradigm table (the rest is the paradigm's own config)."""
        kwargs = {key: _patterns(table.pop(key), key, where) for key in ("include", "exclude") if key in table}
        return cls(**kwargs)

    def allows(self, name: str, head_name: str | None = None) -> bool:
        names = [name, HEAD_ALIAS] if head_name is not None and name == head_name else [name]
        if any(name_matches(p, n) for p in self.exclude for n in names):
            return False
        return any(name_matches(p, n) for p in self.include for n in names)

    def to_table(self) -> dict[str, list[str]]:
        return {"include": list(self.include), "exclude": list(self.exclude)}
