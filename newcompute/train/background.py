"""One piece of host work at a time on a thread of its own, its failure raised on the thread that waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundWork:
    """Runs work beside the training thread, never two at once; :meth:`wait` re-raises what the work raised.

    The exception is raised as it was (same type, same message), so a
    failure reads the same whether the work ran here or on the caller's
    thread: a plugin's :class:`~newcompute.PluginError` still names the
    plugin and the CLI still exits with its code.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def finished(self) -> bool:
        """Whether no work is running (the last one may have failed: :meth:`wait` says)."""
        return self._thread is None or not self._thread.is_alive()

    def start(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a new thread, after waiting for (and raising the failure of) the previous one."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(work,), name=self.name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self._error = exc

    def wait(self) -> None:
        """Block until the work in flight is done; raise what it raised."""
        error = self.join()
        if error is not None:
            raise error

    def join(self) -> BaseException | None:
        """Block until the work in flight is done; return (no longer raise) what it raised.

        For a thread already unwinding from an error of its own, which must
        not be replaced by a second one but must not leave the work running
        either (it may still be writing to a file about to be closed).
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        return error
