"""Stopping a run that has diverged, before it overwrites anything good.

Paradigms that quantize or add noise make training fragile: NewComputeBench
saw optical fine-tuning diverge above lr 1e-5. A loss that is not finite,
or that stays above ``factor`` × its running minimum for ``patience``
steps in a row, stops the run.

The loss of step ``k`` is measured on the weights *before* that step's
update, that is on the weights a checkpoint of step ``k - 1`` holds. So a
checkpoint written after step ``k`` is judged by the loss of step ``k + 1``:
the trainer keeps it only if that loss is under the line (:meth:`accepts`),
and "the last good checkpoint" always holds weights that were seen to score
well.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


class Diverged(Exception):
    """The loss went non-finite or stayed too high; ``str()`` says what happened."""


@dataclass
class DivergenceGuard:
    factor: float
    patience: int
    best: float = math.inf
    streak: int = 0

    @property
    def suspicious(self) -> bool:
        """True while the loss is above the line, so a checkpoint now might hold a diverging model."""
        return self.streak > 0

    def accepts(self, loss: float) -> bool:
        """Whether weights that score ``loss`` are good enough to keep, by the line of the run so far."""
        return math.isfinite(loss) and loss <= self.factor * self.best

    def check(self, step: int, loss: float) -> None:
        """Record one step's loss; raise :class:`Diverged` when the run must stop."""
        if not math.isfinite(loss):
            raise Diverged(f"the training loss became {loss} at step {step}")
        if loss > self.factor * self.best:
            self.streak += 1
            if self.streak >= self.patience:
                raise Diverged(
                    f"the training loss stayed above {self.factor:g} × its minimum ({self.best:.4g}) for "
                    f"{self.streak} steps, reaching {loss:.4g} at step {step}"
                )
            return
        self.streak = 0
        self.best = min(self.best, loss)

    def state_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best = float(state["best"])
        self.streak = int(state["streak"])
