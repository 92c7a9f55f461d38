"""A package's public names imported on first use, so that importing the package costs almost nothing.

``import newcompute`` (and a plugin's entry point, which the CLI imports to
list paradigms and add commands) must not pull in torch and transformers:
they take seconds to import, and ``newcompute --help`` or ``newcompute
list-paradigms`` need neither. A package keeps one dict from each exported
name to the module defining it and hands it to :func:`lazy_exports` for its
module ``__getattr__`` and ``__dir__`` (PEP 562); type checkers and the API
docs read the same names from an ``if TYPE_CHECKING:`` block of imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to its module's path.

    A name is imported from its module when first asked for and then kept
    in the package's namespace, so later look-ups are plain attribute
    reads. Any other name raises ``AttributeError``, which lets ``from
    package import submodule`` import the submodule as usual.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
