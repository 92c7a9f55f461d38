"""Batched Newton–Schulz orthogonalisation: many equal-shape matrices in one ``bmm`` chain.

Matrices arrive stacked as ``(batch, rows, cols)`` with ``rows ≤ cols`` (the
caller transposes tall ones), so the Gram matrix ``XXᵀ`` is the small side
and each iteration costs ``4·rows²·cols + 2·rows³`` multiply-adds per matrix.
The working dtype is whatever the stack is in: bfloat16 on GPUs (tensor
cores, fp32 accumulation inside the matmuls), float32 for exact CPU checks.
``a·X + B·X`` is one ``baddbmm`` so that the sum is formed in float32 before
rounding: folding ``a`` into B's bfloat16 diagonal instead (saving the copy
of X that ``baddbmm`` makes) multiplies the bfloat16 error by 2 to 4, because B's
diagonal (≈ −2.7) is rounded before ``a`` (≈ 3.4) cancels most of it. The
Triton path (:mod:`newcompute_normuon.kernels.symmetric`) adds ``a`` inside its
float32 accumulator and gets the saving without the loss. The step calls
the normalisation and the iterations separately (:func:`normalize_`,
:func:`iterate`) so that the memory-bound scaling can run beside another
stack's iterations. No Python-level branching depends on tensor values, so
each function traces into one graph under ``torch.compile``.
"""

from __future__ import annotations

import torch

from newcompute_normuon.coefficients import Schedule


def check_stack(x: torch.Tensor) -> None:
    """Reject anything but the ``(batch, rows ≤ cols)`` layout the iterations assume."""
    if x.ndim != 3 or x.size(-2) > x.size(-1):
        raise ValueError(f"expected a (batch, rows, cols) stack with rows <= cols, got shape {tuple(x.shape)}")


def divisor(x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Each matrix's Frobenius norm (times the schedule's margin): dividing by it bounds the singular values by 1."""
    return torch.linalg.matrix_norm(x, keepdim=True) * schedule.norm_scale + schedule.eps


def inverse_divisor(x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """``1 / divisor`` as one float32 per matrix, the norm accumulated in float32 from ``x`` as stored."""
    norm = torch.linalg.vector_norm(x, dim=(-2, -1), dtype=torch.float32)
    return 1.0 / (norm * schedule.norm_scale + schedule.eps)


def normalize_(x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Scale every matrix of a stack the step owns in place, so the scaling can run apart from the iterations."""
    return x.div_(divisor(x, schedule))


def iterate(x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """The Newton–Schulz iterations on an already normalised stack."""
    for a, b, c in schedule.steps:
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a)
    return x


def orthogonalize(x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Approximate the orthogonal polar factor U·Vᵀ of every matrix in ``x`` (``rows ≤ cols``)."""
    check_stack(x)
    return iterate(x / divisor(x, schedule), schedule)
