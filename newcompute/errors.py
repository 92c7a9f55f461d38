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
