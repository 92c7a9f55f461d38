"""Which modules a paradigm may touch: include/exclude patterns on qualified names.

Patterns are shell globs (``*.mlp.*``) or, with a ``re:`` prefix, regular
expressions matched against the whole name. A glob ending in ``.*`` also
matches the module it names (``*.self_attn.*`` covers the attention module
itself and its projections). Exclusion wins over inclusion. The name
``lm_head`` stands for the model's output head whatever it is called
(GPT-NeoX calls it ``embed_out``), so the default keeps every head intact,
as NewComputeBench does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from newcompute.errors import ConfigError

HEAD_ALIAS = "lm_head"


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatchcase(name, pattern) or fnmatchcase(name + ".", pattern)


def _patterns(value: Any, key: str, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        raise ConfigError(f"'{where}.{key}' must be a list of patterns such as [\"*.mlp.*\"], got {value!r}")
    for pattern in items:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise ConfigError(f"'{where}.{key}': {pattern!r} is not a valid regular expression ({exc})") from None
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
        if any(_matches(p, n) for p in self.exclude for n in names):
            return False
        return any(_matches(p, n) for p in self.include for n in names)

    def to_table(self) -> dict[str, list[str]]:
        return {"include": list(self.include), "exclude": list(self.exclude)}
