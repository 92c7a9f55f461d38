"""Newton–Schulz coefficient schedules: which odd quintic each iteration applies.

Each iteration maps X to a·X + b·(XXᵀ)X + c·(XXᵀ)²X, i.e. every singular
value σ to a·σ + b·σ³ + c·σ⁵. ``quintic`` is Keller Jordan's fixed
(3.4445, −4.7750, 2.0315), chosen for a steep slope at zero: five iterations
send every normalised singular value in [0.01, 1] into [0.68, 1.14] instead of
exactly 1, which Muon and NorMuon accept by design. ``polar_express`` (Amsel,
Persson, Musco, Gower 2025, arXiv 2505.16932) uses a different minimax-optimal
quintic per iteration and reaches a tighter band, [0.84, 1.15] for every value
in [0.001, 1]; the values are the five-iteration table
modded-nanogpt computed with a 2 % safety factor, which is also why it
normalises by ‖X‖·1.02 rather than ‖X‖ before iterating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CoefficientName = Literal["quintic", "polar_express"]

QUINTIC = (3.4445, -4.7750, 2.0315)

POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


@dataclass(frozen=True)
class Schedule:
    """Everything the iteration needs: per-step (a, b, c) and the pre-scaling of X.

    X is divided by ``norm_scale·‖X‖_F + eps`` so that its spectral norm is at
    most 1 (the Frobenius norm bounds it), the interval the polynomials were
    designed for.
    """

    steps: tuple[tuple[float, float, float], ...]
    norm_scale: float
    eps: float


def schedule(name: CoefficientName, ns_steps: int) -> Schedule:
    """The schedule for ``ns_steps`` iterations; Polar Express repeats its last quintic past its table."""
    if ns_steps < 1:
        raise ValueError(f"ns_steps must be at least 1, got {ns_steps}")
    if name == "quintic":
        return Schedule(steps=(QUINTIC,) * ns_steps, norm_scale=1.0, eps=1e-7)
    if name == "polar_express":
        table = POLAR_EXPRESS[:ns_steps] + (POLAR_EXPRESS[-1],) * max(0, ns_steps - len(POLAR_EXPRESS))
        return Schedule(steps=table, norm_scale=1.02, eps=1e-6)
    raise ValueError(f"unknown Newton–Schulz coefficients {name!r}; valid: 'quintic', 'polar_express'")
