"""The ``newcompute`` command line.

Exit codes: 0 success, 2 bad usage or configuration, 1 a run-time failure,
130 Ctrl-C. User errors print one paragraph, never a traceback (set
``NEWCOMPUTE_DEBUG=1`` to see one).

This module imports only the standard library at its top: the console
script imports it before :func:`main` runs, and :func:`main` first makes
Ctrl-C quiet, then imports the commands (typer, pydantic, the plugins). The
commands import torch and transformers only when they run, so ``--help``
and ``list-paradigms`` need neither.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from newcompute.cli.quiet import quiet_library_logs
from newcompute.cli.signals import quiet_ctrl_c

if TYPE_CHECKING:
    import typer


def build_app() -> typer.Typer:
    """The app: the core's commands, then each plugin's (a plugin that fails to add its own is reported)."""
    import typer

    from newcompute.cli import (
        commands,
        inspect_commands,
        run_commands,
        scaffold_commands,
        share_commands,
        study_commands,
    )
    from newcompute.cli.common import shown_warnings
    from newcompute.plugins import get_registry

    app = typer.Typer(
        name="newcompute",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        callback=commands.root,
    )
    commands.register(app)
    run_commands.register(app)
    scaffold_commands.register(app)
    study_commands.register(app)
    share_commands.register(app)
    inspect_commands.register(app)
    with shown_warnings():
        get_registry().add_commands(app)
    return app


def main() -> None:
    """Console entry point: usage errors exit 2 (Typer), our errors exit with their code, Ctrl-C exits 130."""
    quiet_ctrl_c()
    quiet_library_logs()
    from newcompute.cli.render import print_error
    from newcompute.errors import NewcomputeError

    try:
        build_app()(prog_name="newcompute")
    except NewcomputeError as exc:
        if os.environ.get("NEWCOMPUTE_DEBUG"):
            raise
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("NEWCOMPUTE_DEBUG"):
            raise
        print_error(
            f"{type(exc).__name__}: {exc}\nSet NEWCOMPUTE_DEBUG=1 to see the traceback, and please report it.",
            label="Unexpected error",
        )
        sys.exit(1)
