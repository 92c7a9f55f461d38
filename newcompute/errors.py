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
