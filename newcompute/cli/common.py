"""Options and steps shared by the commands that build a model and apply paradigms."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from newcompute.cli.render import print_error
from newcompute.cli.signals import INTERRUPTED
from newcompute.config import RunConfig, environment_overrides, load_run_config
from newcompute.culprit import DEBUG_ENV, blame, describe
from newcompute.errors import ConfigError, NewcomputeError, NewcomputeWarning
from newcompute.plugins import get_registry

F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A run TOML file with model, train, data and paradigm.NAME tables.")
]
ParadigmOption = Annotated[
    list[str] | None,
    typer.Option("--paradigm", "-p", help="A paradigm to apply (repeatable, in order). Overrides the file's list."),
]
ParadigmConfigOption = Annotated[
    list[str] | None,
    typer.Option(
        "--paradigm-config",
        help="NAME=FILE: read paradigm NAME's table from a TOML file (e.g. NewComputeBench's transform_cfg.toml).",
    ),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value: --set paradigm.optical.fc.q_levels=128")
]
TrustRemoteCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let a model that brings its own Python code (auto_map) run it. Never read from a file: only this "
        "flag allows it, so a downloaded run folder cannot run code unasked.",
    ),
]


def run_config(
    config: Path | None,
    sets: list[str] | None,
    flags: list[str],
    paradigm_configs: list[str] | None = None,
) -> RunConfig:
    """The run config: file, ``--paradigm-config`` tables, ``NEWCOMPUTE_…`` variables, ``--set``, config flags.

    Each later source wins over the ones before it, so a flag typed for one
    run beats a default a job's environment sets. ``flags`` are the
    overrides :func:`newcompute.cli.flags.with_config_flags` hands a command.
    """
    overrides = [*environment_overrides(os.environ), *(sets or []), *flags]
    files: dict[str, Path] = {}
    for item in paradigm_configs or []:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ConfigError(f"--paradigm-config {item!r}: expected NAME=FILE, e.g. optical=transform_cfg.toml")
        files[name] = Path(file)
    return load_run_config(config, overrides, files)


@contextlib.contextmanager
def shown_warnings() -> Iterator[None]:
    """newcompute's warnings as one ``Warning:`` paragraph each on stderr, every time they occur."""
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, NewcomputeWarning):
            print_error(str(message), label="Warning")
        else:
            original(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("always", NewcomputeWarning)
        warnings.showwarning = show
        yield


def user_errors(command: F) -> F:
    """Print a NewcomputeError, or an exception raised in a plugin's code, as one paragraph, not a traceback.

    An error of newcompute's own exits with its code; one traced to a
    plugin names the plugin, paradigm and layer and exits 1; Ctrl-C (a
    ``KeyboardInterrupt`` that reaches the command) exits 130 with one line.
    Anything else goes on to the console entry point's "unexpected error" handler.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with shown_warnings():
            try:
                return command(*args, **kwargs)
            except NewcomputeError as exc:
                if os.environ.get(DEBUG_ENV):
                    raise
                print_error(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                if os.environ.get(DEBUG_ENV):
                    raise
                print_error("Interrupted (Ctrl-C).", label="Stopped")
                raise typer.Exit(INTERRUPTED) from None
            except Exception as exc:
                culprit = blame(exc, get_registry().code_roots())
                if culprit is None or os.environ.get(DEBUG_ENV):
                    raise
                print_error(describe(culprit, exc))
                raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
