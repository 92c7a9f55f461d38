"""The tensor math of one NorMuon step, as pure functions over stacks of equal-shape blocks.

They run as ``torch._foreach_*`` and batched ops: a handful of kernel
launches per bucket, whatever the number of parameters. On CUDA the two
passes that touch every matrix element twice over (momentum into the
stack, the update) run by default as the fused Triton kernels of
:mod:`newcompute_normuon.kernels.elementwise`, with the same arithmetic; the functions
here are the CPU path, the fallback and what ``compile`` compiles. With
``compile=True`` each function is one ``torch.compile`` region, which lets
inductor fuse the elementwise passes; on an H100 with torch 2.11 that
measured slower than eager (docs/benchmarks.md), hence the default. Stacks
are laid out ``(blocks, rows, cols)`` with ``rows ≤ cols``; ``tall`` says
that the logical rows (output neurons) are the stack's columns.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from types import ModuleType

import torch

from newcompute_normuon.coefficients import Schedule
from newcompute_normuon.newton_schulz import inverse_divisor, iterate, normalize_

NORMALIZE_EPS = 1e-10


def advance_momenta(momenta: list[torch.Tensor], grads: list[torch.Tensor], beta: float) -> None:
    """M ← β·M + (1 − β)·G, in place, on whole tensors."""
    torch._foreach_lerp_(momenta, grads, 1.0 - beta)


def stack_sources(
    grads: list[torch.Tensor], momenta: list[torch.Tensor], stack: torch.Tensor, beta: float, nesterov: bool
) -> None:
    """Write each block's update source, cast, into its slot of the preallocated ``stack``.

    ``grads`` and ``momenta`` are block views laid out like the slots; the
    momenta have already been advanced. The Nesterov blend is rounded to the
    momentum's dtype before the cast, which the fused kernel reproduces.
    """
    sources = torch._foreach_lerp(grads, momenta, beta) if nesterov else momenta
    torch._foreach_copy_(list(stack.unbind(0)), sources)


def momentum_and_sources(
    grads: list[torch.Tensor], momenta: list[torch.Tensor], beta: float, nesterov: bool, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Advance the momenta in place; return each parameter's update source in ``dtype`` (sharded path)."""
    torch._foreach_lerp_(momenta, grads, 1.0 - beta)
    sources = torch._foreach_lerp(grads, momenta, beta) if nesterov else momenta
    return [s.to(dtype) for s in sources]


def row_scales(
    ortho: torch.Tensor, second_moment: torch.Tensor, beta2: float, tall: bool, shape_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-row factors that turn the orthogonalised blocks into NorMuon updates.

    NorMuon divides each row by the root of its second moment and then
    rescales the block back to its pre-normalisation Frobenius norm. Both
    norms follow from the row sums of squares — ‖O/√v‖² = Σᵢ rowᵢ/(√vᵢ+ε)² —
    so one reduction over the stack gives everything, and the update itself
    is a single multiply by the returned ``(blocks, rows)`` factors.
    Returns the factors and the new second moment.
    """
    cols_dim = -2 if tall else -1
    row_sq = torch.linalg.vector_norm(ortho, dim=cols_dim, dtype=torch.float32).square()
    new_moment = torch.lerp(second_moment, row_sq / ortho.size(cols_dim), 1.0 - beta2)
    inverse = 1.0 / (new_moment.sqrt() + NORMALIZE_EPS)
    norm_before = row_sq.sum(-1, keepdim=True).sqrt()
    norm_after = (row_sq * inverse.square()).sum(-1, keepdim=True).sqrt()
    return inverse * (norm_before / (norm_after + NORMALIZE_EPS)) * shape_scale, new_moment


def row_factor_view(scales: torch.Tensor, tall: bool) -> torch.Tensor:
    """``(blocks, rows)`` factors shaped to broadcast over a stack."""
    return scales.unsqueeze(-2) if tall else scales.unsqueeze(-1)


def apply_updates(
    targets: list[torch.Tensor],
    ortho: torch.Tensor,
    scales: torch.Tensor,
    tall: bool,
    neg_lr: torch.Tensor,
    decay: torch.Tensor | None,
) -> None:
    """W ← W·(1 − lr·wd) − lr·(O ⊙ row factors), for every block view in ``targets``.

    ``addcmul`` reads the bfloat16 blocks and the per-row factors directly,
    so no float32 copy of the update is materialised. ``neg_lr`` and
    ``decay`` are 0-d tensors on the weights' device, so a scheduler changing
    the lr every step neither recompiles nor synchronises; ``decay`` is
    ``None`` when there is none.
    """
    if decay is not None:
        torch._foreach_mul_(targets, decay)
    factors = row_factor_view(scales * neg_lr, tall)
    torch._foreach_addcmul_(targets, list(ortho.unbind(0)), list(factors.unbind(0)))


def apply_local_updates(
    targets: list[torch.Tensor],
    ortho: list[torch.Tensor],
    factors: list[torch.Tensor],
    neg_lr: torch.Tensor,
    decay: torch.Tensor | None,
) -> None:
    """The same update on whole local shards, with factors already broadcastable (sharded path)."""
    if decay is not None:
        torch._foreach_mul_(targets, decay)
    torch._foreach_addcmul_(targets, ortho, [f * neg_lr for f in factors])


RECOMPILE_LIMIT = 64
"""Each bucket shape (and tall/wide) is its own specialised graph; a model has a handful, fused or
overridden groups add more, and dynamo's default limit of 8 would silently drop the rest to eager."""


INDUCTOR_OPTIONS = {"loop_ordering_after_fusion": False}
"""torch 2.11's inductor fails an assertion (``reorder_loops_by_dep_pair``) when it reorders loops
while fusing the momentum/stack graph on CUDA; without that locality pass the graphs compile."""


def _compile_failures() -> tuple[type[BaseException], ...]:
    """The exception types with which torch.compile reports that it could not compile a graph."""
    failures: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed

        failures.append(BackendCompilerFailed)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import InductorError

        failures.append(InductorError)
    except ImportError:
        pass
    return tuple(failures)


def _compiled(fn: Callable[..., object]) -> Callable[..., object]:
    """``fn`` under torch.compile, falling back to eager (with one warning) if compilation fails.

    A compiler bug in the installed torch should cost speed, not the run.
    """
    compiled = torch.compile(fn, dynamic=False, options=INDUCTOR_OPTIONS)
    failures = _compile_failures()
    broken: list[BaseException] = []

    @functools.wraps(fn)
    def call(*args: object, **kwargs: object) -> object:
        if broken:
            return fn(*args, **kwargs)
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args, **kwargs)
        except failures as exc:
            broken.append(exc)
            warnings.warn(
                f"newcompute-normuon: torch.compile failed on {fn.__name__} ({type(exc).__name__}); "
                "running it eagerly from now on.",
                RuntimeWarning,
                stacklevel=2,
            )
            return fn(*args, **kwargs)

    return call


ELEMENTWISE = ("auto", "torch", "triton")
"""Where the momentum and update passes run: the fused Triton kernels ("triton"; on CPU only under
``TRITON_INTERPRET=1``), the functions above ("torch"), or "auto": Triton on CUDA unless ``compiled``."""


class StepOps:
    """The step's functions, compiled once per process when ``compiled``.

    ``symmetric`` runs the Newton–Schulz Gram and polynomial products with
    the Triton kernels of :mod:`newcompute_normuon.kernels.symmetric` (CUDA only).
    ``elementwise`` is one of :data:`ELEMENTWISE`.
    """

    def __init__(self, compiled: bool, symmetric: bool = False, elementwise: str = "torch") -> None:
        self.compiled = compiled
        self.symmetric = symmetric
        self.elementwise = elementwise
        self._has_triton = importlib.util.find_spec("triton") is not None
        self._compile: Callable[[Callable[..., object]], Callable[..., object]] = (
            _compiled if compiled else (lambda fn: fn)
        )
        self.advance_momenta = self._compile(advance_momenta)
        self.stack_sources = self._compile(stack_sources)
        self.momentum_and_sources = self._compile(momentum_and_sources)
        self.row_scales = self._compile(row_scales)
        self.apply_updates = self._compile(apply_updates)
        self.apply_local_updates = self._compile(apply_local_updates)
        self._normalizers: dict[Schedule, Callable[[torch.Tensor], torch.Tensor]] = {}
        self._iterators: dict[Schedule, Callable[[torch.Tensor], torch.Tensor]] = {}

    def fuses(self, device: torch.device) -> bool:
        """Whether the momentum and update passes of tensors on ``device`` run as fused Triton kernels."""
        if self.elementwise == "auto":
            return device.type == "cuda" and not self.compiled and self._has_triton
        return self.elementwise == "triton"

    @functools.cached_property
    def fused_kernels(self) -> ModuleType:
        """:mod:`newcompute_normuon.kernels.elementwise`, imported on first use so that CPU-only installs never need Triton."""
        from newcompute_normuon.kernels import elementwise

        return elementwise

    def normalize_(self, stack: torch.Tensor, schedule: Schedule) -> torch.Tensor | None:
        """Scale the stack for Newton–Schulz, or, for the symmetric kernels, return each matrix's inverse
        divisor for :meth:`iterate` to apply inside its first products (one pass over the stack fewer)."""
        if self.symmetric:
            return inverse_divisor(stack, schedule)
        if schedule not in self._normalizers:
            self._normalizers[schedule] = self._compile(functools.partial(normalize_, schedule=schedule))
        self._normalizers[schedule](stack)
        return None

    def iterate(self, stack: torch.Tensor, schedule: Schedule, inverse: torch.Tensor | None = None) -> torch.Tensor:
        if self.symmetric:
            from newcompute_normuon.kernels.symmetric import iterate_symmetric

            return iterate_symmetric(stack, schedule, inverse)
        if schedule not in self._iterators:
            self._iterators[schedule] = self._compile(functools.partial(iterate, schedule=schedule))
        return self._iterators[schedule](stack)
