"""Two CUDA streams for one step: Newton–Schulz on one, the memory-bound work beside it.

Newton–Schulz is compute-bound; the momentum pass, the row statistics, the
update and AdamW are memory-bound. Queued on one stream they add up; on two
they can share the GPU. The iterations run on a high-priority "main"
stream, so that the GPU schedules their blocks first and the memory-bound
kernels of the default-priority "side" stream take whatever room is left
on the SMs (between kernels, in tail waves, beside a block that does not
fill an SM). Both are ordered against the caller's stream by events:

* both first wait for everything queued on the caller's stream (the
  gradients, and the stacks the step allocates before forking);
* a stack built on the side is marked, and main waits for the mark before
  iterating on it;
* an orthogonalised stack is marked on main, the side waits for the mark,
  and the tensor is recorded as used by the side stream so the caching
  allocator does not hand its memory to main while the side still reads it;
* the step ends with the caller's stream waiting for both, so callers see
  finished parameters on their own stream.

Tensors both lanes use must be allocated on the caller's stream before the
fork (the engine allocates the stacks and scalars up front), or be lent.
Without streams (CPU, or overlap switched off) every method is a no-op and
the same code runs in program order on the caller's stream.
"""

from __future__ import annotations

import contextlib
import functools

import torch

HIGH_PRIORITY = -1
"""Any negative priority is above the default (0); torch maps it into the device's range."""


@functools.cache
def _streams(device: torch.device) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    """One (main, side) pair per device for the whole process; steps are serialised by the caller's stream."""
    return torch.cuda.Stream(device=device, priority=HIGH_PRIORITY), torch.cuda.Stream(device=device)


class Lanes:
    """Ordering between the caller's stream and the main and side streams of ``device``, if any."""

    def __init__(self, device: torch.device | None = None) -> None:
        self._device = device
        self._main = self._side = self._caller = None
        if device is not None:
            self._caller = torch.cuda.current_stream(device)
            self._main, self._side = _streams(device)

    def main(self) -> contextlib.AbstractContextManager[object]:
        """Work queued inside runs on the main (Newton–Schulz) stream."""
        return torch.cuda.stream(self._main) if self._main is not None else contextlib.nullcontext()

    def side(self) -> contextlib.AbstractContextManager[object]:
        """Work queued inside runs on the side (memory-bound) stream."""
        return torch.cuda.stream(self._side) if self._side is not None else contextlib.nullcontext()

    def fork(self) -> None:
        """Both lanes wait for everything queued on the caller's stream so far."""
        if self._device is not None:
            self._main.wait_stream(self._caller)
            self._side.wait_stream(self._caller)

    def join(self) -> None:
        """The caller's stream waits for everything queued on both lanes so far."""
        if self._device is not None:
            self._caller.wait_stream(self._main)
            self._caller.wait_stream(self._side)

    def mark(self) -> torch.cuda.Event | None:
        """An event at the current point of the current stream."""
        return torch.cuda.current_stream(self._device).record_event() if self._device is not None else None

    def wait(self, event: torch.cuda.Event | None) -> None:
        """The current stream waits for ``event`` (from :meth:`mark`)."""
        if event is not None:
            torch.cuda.current_stream(self._device).wait_event(event)

    def lend(self, tensor: torch.Tensor) -> None:
        """``tensor``, allocated on main, is read on the side stream: keep its memory until the side is done."""
        if self._device is not None:
            tensor.record_stream(self._side)
