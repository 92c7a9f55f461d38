"""``newcompute new-plugin``: start a third-party paradigm plugin from a working template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newcompute.cli.common import user_errors
from newcompute.cli.render import console
from newcompute.scaffold import generate_plugin, parse_roles


@user_errors
def new_plugin(
    name: Annotated[str, typer.Argument(help="Paradigm name, e.g. 'photonic'; the package is newcompute_NAME.")],
    roles: Annotated[
        str, typer.Option("--roles", help="Comma-separated roles to scaffold: layer, attention, optimizer.")
    ] = "layer",
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Folder to create NAME/ in (default: the current folder).")
    ] = None,
) -> None:
    """Write a pip-installable plugin distribution with a placeholder paradigm and conformance tests."""
    target = generate_plugin(name, parse_roles(roles), directory or Path.cwd())
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    console.print(f"Wrote {target} ({len(written)} files):", highlight=False)
    for path in written:
        console.print(f"  {path}", highlight=False)
    console.print(
        f"Next: pip install -e {target} && pytest {target}\n"
        "Then replace the code marked PLACEHOLDER with your device's numerics.",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("new-plugin")(new_plugin)
