"""Keep other libraries' start-up chatter off a command's output.

With the test or GPU extras installed, transformers imports torchao
whenever it is present, and on a machine without its CUDA libraries
torchao logs one warning per missing library, then torch logs a
deprecation for two of torchao's enums: six lines on every command, none
of them about the user's run. Only those two loggers are raised to
errors, only for the command line (a notebook importing newcompute keeps
its own logging), and ``NEWCOMPUTE_DEBUG=1`` shows them again. Only the
standard library is imported, so this runs before anything heavy.
"""

from __future__ import annotations

import logging
import os

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")
"""Loggers that speak at import about the installation, never about a run."""


def quiet_library_logs() -> None:
    if os.environ.get("NEWCOMPUTE_DEBUG"):  # culprit.DEBUG_ENV; importing it would cost pydantic
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
