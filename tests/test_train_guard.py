"""The divergence guard: non-finite losses stop at once; high losses stop after `patience` steps in a row."""

from __future__ import annotations

import math

import pytest

from newcompute.train.guard import Diverged, DivergenceGuard


def test_nan_and_inf_stop_immediately() -> None:
    for bad in (math.nan, math.inf):
        guard = DivergenceGuard(factor=2.0, patience=5)
        guard.check(1, 3.0)
        with pytest.raises(Diverged, match=f"became {bad} at step 2"):
            guard.check(2, bad)


def test_loss_above_factor_times_minimum_for_patience_steps() -> None:
    guard = DivergenceGuard(factor=2.0, patience=3)
    for step, loss in enumerate([5.0, 3.0, 6.0, 6.5], start=1):  # 6.0 is exactly 2 × 3.0: not above the line
        guard.check(step, loss)
    assert (guard.best, guard.streak, guard.suspicious) == (3.0, 1, True)
    guard.check(5, 4.0)  # back under the line: the streak resets, the minimum stays
    assert (guard.best, guard.streak) == (3.0, 0)
    guard.check(6, 7.0)
    guard.check(7, 7.0)
    with pytest.raises(Diverged, match=r"above 2 × its minimum \(3\) for 3 steps, reaching 9 at step 8"):
        guard.check(8, 9.0)


def test_state_round_trips() -> None:
    guard = DivergenceGuard(factor=3.0, patience=4)
    guard.check(1, 2.0)
    guard.check(2, 7.0)
    restored = DivergenceGuard(factor=3.0, patience=4)
    restored.load_state_dict(guard.state_dict())
    assert (restored.best, restored.streak) == (2.0, 1)
