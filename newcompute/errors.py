"""Errors that carry a message meant for the user, not a traceback.

The CLI prints these as one paragraph and exits 2 (``ConfigError``, bad
input) or 1 (``RunError``, something failed while running).
"""

from __future__ import annotations


class NewcomputeError(Exception):
    """Base of every error newcompute raises on purpose."""

    exit_code = 1


class ConfigError(NewcomputeError, ValueError):
    """The user asked for something invalid: a field, file, model or layer."""

    exit_code = 2


class RunError(NewcomputeError, RuntimeError):
    """A run could not go on (divergence, a failed checkpoint, a broken plugin)."""

    exit_code = 1


class PluginError(RunError):
    """A plugin's own code failed: a hook, a validator, or a module's forward or backward.

    The message names the plugin's distribution, the paradigm, the hook and
    the layer, and where to report it; the plugin's original exception is
    the ``__cause__``.
    """


class NewcomputeWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one line)."""


class MissingDependency(RunError, ModuleNotFoundError):
    """An optional package that a plugin's fast path needs is not installed.

    Also a ``ModuleNotFoundError``, so code that takes its reference path
    when a kernel module cannot be imported goes on doing so; code that
    cannot fall back shows the message, which says what to install.
    """


def missing_dependency(package: str, distribution: str, purpose: str, extra: str = "gpu") -> MissingDependency:
    """The error for ``purpose`` of ``distribution`` (e.g. "the fused attention kernels") needing ``package``.

    It names the plugin's distribution and the extra that brings the
    package, as plugins declare it in their ``pyproject.toml``
    (``[project.optional-dependencies] gpu = ["triton>=3.2"]``).
    """
    error = MissingDependency(
        f"{distribution}: the '{package}' package is not installed; {purpose} cannot run without it. "
        f"Install it with: pip install '{distribution}[{extra}]'."
    )
    error.name = package
    return error
