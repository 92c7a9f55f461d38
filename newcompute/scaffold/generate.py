"""Rendering the plugin templates for a name and a set of roles, and writing them out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from newcompute import __version__
from newcompute.errors import ConfigError
from newcompute.paradigm import Role

ROLE_ORDER = (Role.LAYER, Role.ATTENTION, Role.OPTIMIZER)
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

_BAD_VALUE = {
    Role.LAYER: ("step", "-1.0"),
    Role.ATTENTION: ("attention_step", "-1.0"),
    Role.OPTIMIZER: ("matrix_lr_scale", "0.0"),
}
_IDENTITY_KEY = {Role.LAYER: "step", Role.ATTENTION: "attention_step"}
_MODULES = {
    Role.LAYER: ("layer.py", "the linear layer that replaces `nn.Linear` / `Conv1D`"),
    Role.ATTENTION: ("attention.py", "the Q·Kᵀ and P·V products inside attention"),
    Role.OPTIMIZER: ("optimizer.py", "the optimizer, with per-parameter-kind groups"),
}
_HOOK_IMPORTS = {
    Role.LAYER: ("from torch import nn", "from {package}.layer import {class_prefix}Linear"),
    Role.ATTENTION: ("from torch import nn", "from {package}.attention import {class_prefix}Matmuls"),
    Role.OPTIMIZER: ("import torch", "from {package}.optimizer import build_optimizer"),
}


@dataclass(frozen=True)
class PluginNames:
    """Every spelling of the plugin's name the files need, derived from the paradigm name."""

    paradigm: str
    package: str
    distribution: str
    class_prefix: str
    title: str

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        if not _NAME.match(name):
            raise ConfigError(
                f"Plugin name {name!r} must start with a lower-case letter and use only lower-case letters, "
                "digits and single '-' or '_' between them (e.g. 'photonic' or 'analog-crossbar'); it becomes "
                "the paradigm name, the entry point and, with '-' as '_', the Python package newcompute_NAME."
            )
        words = re.split(r"[-_]", name)
        return cls(
            paradigm=name,
            package="newcompute_" + "_".join(words),
            distribution="newcompute-" + "-".join(words),
            class_prefix="".join(word.capitalize() for word in words),
            title=" ".join(words).capitalize(),
        )


def parse_roles(text: str) -> tuple[Role, ...]:
    """``"layer,optimizer"`` → the roles in canonical order; unknown or empty lists are refused."""
    valid = ", ".join(role.value for role in ROLE_ORDER)
    chosen: set[Role] = set()
    for item in (part.strip() for part in text.split(",")):
        try:
            chosen.add(Role(item))
        except ValueError:
            raise ConfigError(
                f"--roles: unknown role {item!r}; choose one or more of {valid}, comma-separated."
            ) from None
    return tuple(role for role in ROLE_ORDER if role in chosen)


def _template(relative: str) -> Template:
    return Template(files("newcompute.scaffold").joinpath("templates", relative).read_text(encoding="utf-8"))


def _imports(names: PluginNames, roles: tuple[Role, ...]) -> str:
    external = sorted({_HOOK_IMPORTS[role][0] for role in roles}, key=lambda line: (line.startswith("from"), line))
    own = sorted(
        [f"from {names.package}.config import {names.class_prefix}Config"]
        + [_HOOK_IMPORTS[role][1].format(**vars(names)) for role in roles]
    )
    return "\n\n".join(["\n".join(external), "import newcompute as nc", "\n".join(own)])


def _values(names: PluginNames, roles: tuple[Role, ...]) -> dict[str, str]:
    identity = {_IDENTITY_KEY[r]: "0.0" for r in roles if r in _IDENTITY_KEY}
    layout = [f"| `{names.package}/{_MODULES[r][0]}` | {_MODULES[r][1]} |" for r in roles]
    if Role.LAYER in roles or Role.ATTENTION in roles:
        layout.insert(0, f"| `{names.package}/ops.py` | the simulated arithmetic as autograd operations, shared by the layers |")
    placeholders = [f"`{names.package}/{_MODULES[r][0]}`" for r in roles]
    return {
        **vars(names),
        "core_version": __version__,
        "role_list": ", ".join(role.value for role in roles),
        "roles": ", ".join(f"nc.Role.{role.name}" for role in roles),
        "fields": "".join(_template(f"roles/{role.value}.field.tmpl").template for role in roles).rstrip("\n"),
        "hooks": "".join(_template(f"roles/{r.value}.hook.tmpl").safe_substitute(vars(names)) for r in roles).rstrip(),
        "imports": _imports(names, roles),
        "bad_tables": ", ".join(f'{{"{key}": {value}}}' for key, value in (_BAD_VALUE[r] for r in roles)),
        "identity_table": "{" + ", ".join(f'"{k}": {v}' for k, v in identity.items()) + "}" if identity else "None",
        "layout_rows": "\n".join(layout),
        "placeholder_modules": "> " + ", ".join(placeholders) + ".",
    }


def plan_files(name: str, roles: tuple[Role, ...]) -> dict[str, str]:
    """Relative path → file content of the plugin distribution for ``name`` with ``roles``."""
    if not roles:
        raise ConfigError("--roles: choose at least one of layer, attention, optimizer.")
    names = PluginNames.from_name(name)
    values = _values(names, roles)
    package, tests = names.package, f"tests/test_{names.package.removeprefix('newcompute_')}"
    wanted = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{package}/__init__.py": "package/__init__.py.tmpl",
        f"{package}/config.py": "package/config.py.tmpl",
        f"{package}/plugin.py": "package/plugin.py.tmpl",
        f"{tests}_conformance.py": "tests/test_conformance.py.tmpl",
    }
    if Role.LAYER in roles or Role.ATTENTION in roles:
        wanted[f"{package}/ops.py"] = "package/ops.py.tmpl"
    for role in roles:
        wanted[f"{package}/{_MODULES[role][0]}"] = f"package/{role.value}.py.tmpl"
        wanted[f"{tests}_{role.value}.py"] = f"tests/test_{role.value}.py.tmpl"
    return {path: _template(template).substitute(values) for path, template in wanted.items()}


def generate_plugin(name: str, roles: tuple[Role, ...], parent: Path) -> Path:
    """Write the distribution into ``parent/name`` (which must not exist or be empty) and return that folder."""
    contents = plan_files(name, roles)
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not an empty folder; choose another name or --dir.")
    for relative, text in contents.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
