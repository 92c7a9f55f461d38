"""``import newcompute`` and the first-party plugins' packages resolve their public names on first use."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys

import pytest

PACKAGES = ["newcompute", "newcompute_optical", "newcompute_mx", "newcompute_normuon"]


def _type_checking_imports(package: str) -> dict[str, str]:
    """Name → module of the imports under ``if TYPE_CHECKING:`` in the package's ``__init__``."""
    tree = ast.parse(inspect.getsource(importlib.import_module(package)))
    guarded = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    return {
        alias.asname or alias.name: node.module
        for block in guarded
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_all_and_type_checking_imports_agree(package: str) -> None:
    module = importlib.import_module(package)
    exports = module._EXPORTS
    eager = {name for name in exports if name in vars(module) and name not in _type_checking_imports(package)}
    assert set(module.__all__) - {"__version__"} == set(exports)
    assert _type_checking_imports(package) == {name: exports[name] for name in exports if name not in eager}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_resolves_to_the_object_its_module_defines(package: str) -> None:
    module = importlib.import_module(package)
    for name, source in module._EXPORTS.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), name), name
    assert set(module.__all__) <= set(dir(module))


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    import newcompute

    with pytest.raises(AttributeError, match="module 'newcompute' has no attribute 'aply'"):
        newcompute.aply  # noqa: B018 - the look-up is the test
    from newcompute import rules

    assert rules is sys.modules["newcompute.rules"]
