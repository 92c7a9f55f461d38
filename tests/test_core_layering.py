"""Imports go one way, CLI → train → core, so that the core and the trainer work without the layers above them."""

from __future__ import annotations

import ast
from pathlib import Path

import newcompute

PACKAGE = Path(newcompute.__file__).parent
RANKS = {"core": 0, "train": 1, "testing": 1, "scaffold": 1, "study": 2, "cli": 3}
"""A module may import its own layer and lower ranks only; the layers of one rank do not import each other."""


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "cli"  # `python -m newcompute[.train]` is a command-line entry point
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else "core"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``newcompute`` module ``path`` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] == "newcompute"]


def _upward_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = _layer(module)
        for imported, line in _imports(path):
            target = _layer(imported)
            if target != source and RANKS[target] >= RANKS[source]:
                wrong.append(f"{module} ({source}) imports {imported} ({target}) at line {line}")
    return wrong


def test_no_module_imports_a_layer_above_or_beside_its_own() -> None:
    assert _upward_imports() == []


def test_no_two_modules_import_each_other() -> None:
    """A package's ``__init__`` re-exporting its modules does not count: they import names from it, not back."""
    graph = {_module_name(path): {name for name, _ in _imports(path)} for path in PACKAGE.rglob("*.py")}
    mutual = sorted(
        f"{a} <-> {b}"
        for a, imported in graph.items()
        for b in imported
        if a < b and b in graph and a in graph[b] and not b.startswith(a + ".") and not a.startswith(b + ".")
    )
    assert mutual == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from newcompute.cli.render import console\n    import newcompute.train.loop\n")
    assert _imports(source) == [
        ("newcompute.cli.render", 2),
        ("newcompute.cli.render.console", 2),
        ("newcompute.train.loop", 3),
    ]
    assert [_layer(name) for name, _ in _imports(source)] == ["cli", "cli", "train"]
