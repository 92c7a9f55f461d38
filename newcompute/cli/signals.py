"""Ctrl-C while the command line starts: one line and exit 130, never a traceback.

Only the standard library is imported here, so that the console entry point
can install the handler before anything slow (typer, pydantic, the plugins,
torch inside a command) is imported.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


def _stop_now(signum: int, frame: object) -> None:
    sys.stderr.write("\nInterrupted (Ctrl-C).\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def quiet_ctrl_c() -> None:
    """Make Ctrl-C end the process at once with exit 130 and one line, wherever it lands.

    Python's default raises ``KeyboardInterrupt`` wherever the program is:
    in the middle of importing torch that becomes a C++ abort, elsewhere a
    traceback. Nothing a run must keep is open while this handler is in
    place: the training loop installs its own (finish the step, checkpoint,
    stop) for as long as it runs, and a run killed here resumes as after any kill.
    """
    if not os.environ.get("NEWCOMPUTE_DEBUG"):  # culprit.DEBUG_ENV; importing it would cost pydantic
        signal.signal(signal.SIGINT, _stop_now)
