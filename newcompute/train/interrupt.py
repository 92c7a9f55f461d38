"""Ctrl-C as a request to stop cleanly rather than a crash.

The first Ctrl-C sets a flag that the loop reads between optimizer steps,
so the run finishes the step it is in, writes a checkpoint and exits; a
step is never cut in half. A second Ctrl-C raises ``KeyboardInterrupt``
at once, leaving the previous checkpoint as the newest.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType


class StopRequest:
    """A SIGINT handler installed for the duration of a ``with`` block (main thread only)."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.requested = False
        self._notify = notify
        self._previous: object = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._notify("Ctrl-C: finishing this step, saving a checkpoint, then stopping (Ctrl-C again stops at once).")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
