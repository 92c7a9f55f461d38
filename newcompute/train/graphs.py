"""``--cuda-graphs``: each micro-batch's forward and backward replayed as one captured CUDA graph.

A simulated paradigm turns one cuBLAS call per layer into several small
kernels (quantize the operands, a GEMM with a noisy read-out, fold the
ranges), each launched from Python. The GPU then waits for the host rather
than for the arithmetic: benchmarks/optical.py measured a 400M Llama's
optical step at 1.48× the bf16 step launched eagerly and 1.09× replayed as a
graph. Capturing the micro-step once removes that launch cost for every
paradigm, with none of ``torch.compile``'s compilation time.

What replaying assumes, and how it holds:

* one process on one CUDA device (checked when the session is built);
* a fixed batch shape (blocks are packed to one length);
* gradients accumulate into buffers that exist at capture time and are
  zeroed in place afterwards, never set to ``None`` (the loop does so);
* the forward pass neither synchronises with the host nor copies from
  pageable CPU memory. A paradigm that does makes the capture fail; the run
  then says so and carries on eagerly, with nothing lost;
* nothing the step computes depends on host-side state that changes from
  call to call, which a replay would repeat unchanged. No capture can
  detect that, so a paradigm declares it (``Paradigm.capturable``), and
  ``auto``, the default, captures only when every paradigm in the step does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from newcompute.errors import ConfigError
from newcompute.paradigm import Paradigm, Role

WARMUP_MICRO_STEPS = 3
"""Micro-steps run eagerly (on a side stream, as CUDA graph capture requires) before capturing, also
after a resume: they initialise cuBLAS workspaces, autotune Triton kernels and let paradigms calibrate."""

MicroStep = Callable[[torch.Tensor], torch.Tensor]
"""Forward and backward of one micro-batch of token ids; returns the (unscaled) loss."""

IN_THE_STEP = frozenset({Role.LAYER, Role.ATTENTION})
"""The roles whose modules run inside the captured micro-step (an optimizer's step stays eager)."""


@dataclass(frozen=True)
class GraphChoice:
    """Whether the micro-steps are captured and replayed, and why: the run summary's ``CUDA graphs`` line."""

    enabled: bool
    reason: str


def _obstacle(device: str, processes: int, precision: str) -> str:
    """What about the run rules graphs out, whatever its paradigms ('' if nothing)."""
    if device != "cuda":
        return f"needs a CUDA GPU; this run is on {device}"
    if processes > 1:
        return f"runs on one process; this run has {processes}"
    if precision == "fp16":
        return "does not support fp16: its loss scaler checks for overflow on the host"
    return ""


def choose_cuda_graphs(
    setting: str, device: str, processes: int, precision: str, paradigms: Sequence[Paradigm]
) -> GraphChoice:
    """Decide ``--cuda-graphs`` (``setting``: auto, on or off) for a run on ``device`` (a device type).

    ``precision`` is accelerate's mixed precision (no, bf16, fp16). ``on``
    refuses a run that cannot be captured at all (exit 2); with a paradigm
    that does not declare itself capturable it still captures, as asked,
    and says so. ``auto`` captures when ``on`` would be accepted and every
    layer and attention paradigm declares :attr:`Paradigm.capturable`;
    otherwise it says why not, and the run goes on eagerly.
    """
    if setting == "off":
        return GraphChoice(False, "off (--cuda-graphs off)")
    obstacle = _obstacle(device, processes, precision)
    if obstacle and setting == "on":
        raise ConfigError(
            f"--cuda-graphs on (train.cuda_graphs) {obstacle}. Use --cuda-graphs auto to capture only where "
            "it can, or off."
        )
    if obstacle:
        return GraphChoice(False, f"off: CUDA graph capture {obstacle}")
    stepping = [p for p in paradigms if p.roles & IN_THE_STEP]
    undeclared = [p.name for p in stepping if not p.capturable]
    names = f"paradigm {undeclared[0]} does" if len(undeclared) == 1 else f"paradigms {', '.join(undeclared)} do"
    unsure = f"{names} not declare that it can be captured (Paradigm.capturable)" if undeclared else ""
    if setting == "on":
        caution = f"; {unsure}: if its output depends on host-side state, replays repeat it" if undeclared else ""
        return GraphChoice(True, f"on (--cuda-graphs on): each micro-step captured once, then replayed{caution}")
    if undeclared:
        return GraphChoice(False, f"off: {unsure}; --cuda-graphs on captures anyway")
    which = ", ".join(p.name for p in stepping)
    which = f"every paradigm in the step ({which}) can be captured" if stepping else "no paradigm in the step"
    return GraphChoice(
        True, f"on: one CUDA GPU and {which}; each micro-step captured once, then replayed (--cuda-graphs off: eager)"
    )


@dataclass
class _Capture:
    """One recorded micro-step: the graph, its input buffer and its loss output."""

    graph: torch.cuda.CUDAGraph
    batch: torch.Tensor
    loss: torch.Tensor


class GraphedMicroStep:
    """Runs :data:`MicroStep` eagerly while warming up, then captures it once and replays it.

    A step that ``--telemetry-every`` measures has its own capture, recorded
    while statistics collection is on, so it replays the paradigms'
    in-place statistic updates with everything else instead of running
    eagerly (which cost a 400M model's measured step about a second). Its
    first call runs eagerly, warming up what only statistics use; the
    second records it. Both captures share one memory pool: they are never
    replayed at the same time, so the second reuses the first's
    intermediates rather than doubling the activation memory.
    """

    def __init__(
        self,
        model: nn.Module,
        eager: MicroStep,
        warn: Callable[[str], None],
        before_capture: Callable[[], None] | None = None,
    ) -> None:
        """``before_capture`` runs just before a capture: whatever works on the GPU from another thread (the
        telemetry writer) must be done by then, since a capture fails when another thread syncs meanwhile."""
        self.model = model
        self.eager = eager
        self.warn = warn
        self.before_capture = before_capture
        self.side = torch.cuda.Stream()
        self.captures: dict[bool, _Capture] = {}
        self.failed: set[bool] = set()
        self.calls = {False: 0, True: 0}

    def __call__(self, batch: torch.Tensor, measured: bool = False) -> torch.Tensor:
        """The micro-step's loss; ``measured``: the step collects statistics (see the class docstring)."""
        self.calls[measured] += 1
        if False in self.failed or measured in self.failed:
            return self.eager(batch).detach()
        warm_up = 1 if measured else WARMUP_MICRO_STEPS
        if self.calls[measured] <= warm_up:
            return self._warm_up(batch)
        capture = self.captures.get(measured)
        if capture is None:
            capture = self._capture(batch, measured)
            if capture is None:
                return self.eager(batch).detach()
        capture.batch.copy_(batch, non_blocking=True)
        capture.graph.replay()
        return capture.loss

    def _warm_up(self, batch: torch.Tensor) -> torch.Tensor:
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            loss = self.eager(batch).detach()
        torch.cuda.current_stream().wait_stream(self.side)
        return loss

    def _capture(self, batch: torch.Tensor, measured: bool) -> _Capture | None:
        """Record the micro-step; nothing runs until the first replay. None (and a warning) if it fails."""
        if self.before_capture is not None:
            self.before_capture()
        for param in self.model.parameters():
            if param.requires_grad and param.grad is None:
                param.grad = torch.zeros_like(param)
        inputs = batch.clone()
        graph = torch.cuda.CUDAGraph()
        shared = next(iter(self.captures.values()), None)
        try:
            with torch.cuda.graph(graph, pool=shared.graph.pool() if shared is not None else None):
                loss = self.eager(inputs)
        except RuntimeError as exc:
            self.failed.add(measured)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if measured:
                self.warn(
                    f"--cuda-graphs: capturing a step that collects statistics failed ({reason}); the steps "
                    "--telemetry-every measures run eagerly, the others are still replayed. A statistic that reads "
                    "a value on the host, or a new tensor each step, cannot be captured."
                )
            else:
                self.warn(
                    f"--cuda-graphs: capturing the training step failed ({reason}); training goes on without "
                    "graphs. A layer or paradigm that synchronises with the host or copies from CPU memory in its "
                    "forward pass cannot be captured."
                )
            return None
        capture = _Capture(graph, inputs, loss.detach())
        self.captures[measured] = capture
        return capture
