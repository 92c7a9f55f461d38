"""Newton–Schulz: exact behaviour on singular values, the known bands, and bf16 accuracy."""

from __future__ import annotations

import pytest
import torch
from normuon_helpers import BF16_RELATIVE_TOLERANCE, relative_error, scalar_newton_schulz

from newcompute_normuon import POLAR_EXPRESS, QUINTIC, orthogonalize, reference_orthogonalize, schedule

COEFFICIENTS = ["quintic", "polar_express"]
BANDS = {"quintic": (0.68, 1.14), "polar_express": (0.84, 1.15)}
"""Where five iterations send normalised singular values in [0.01, 1]: computed from the scalar
polynomials (see coefficients.py); below 0.01 the quintic has not yet lifted them."""


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
def test_acts_on_singular_values_only(coefficients: str) -> None:
    """NS(U·S·Vᵀ) = U·p(S)·Vᵀ with p the iterated scalar quintic: vectors kept, values mapped."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    sigma = torch.logspace(0, -1.5, 24, dtype=torch.float64)
    matrix = (u * sigma) @ v[:, :24].T
    expected = (u * scalar_newton_schulz(sigma, coefficients)) @ v[:, :24].T
    got = orthogonalize(matrix.float()[None], schedule(coefficients, 5))[0]
    assert torch.allclose(got.double(), expected, atol=2e-5)


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
def test_diagonal_input_by_hand(coefficients: str) -> None:
    """diag(3, 1): each entry follows a·x + b·x³ + c·x⁵ from x = σ/‖σ‖, off-diagonals stay exactly 0."""
    steps = schedule(coefficients, 5)
    scale = 10**0.5 * steps.norm_scale + steps.eps
    expected = []
    for x in (3 / scale, 1 / scale):
        for a, b, c in steps.steps:
            x = a * x + b * x**3 + c * x**5
        expected.append(x)
    got = orthogonalize(torch.diag(torch.tensor([3.0, 1.0]))[None], steps)[0]
    assert got[0, 1].item() == 0.0 and got[1, 0].item() == 0.0
    assert got.diagonal().tolist() == pytest.approx(expected, rel=5e-5)


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
@pytest.mark.parametrize("shape", [(32, 64), (48, 48), (96, 32)])
def test_singular_values_land_in_the_known_band(coefficients: str, shape: tuple[int, int]) -> None:
    """Random singular vectors, singular values spread over 1.5 decades (all ≥ 0.01 once normalised)."""
    torch.manual_seed(1)
    rank = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], rank))
    v, _ = torch.linalg.qr(torch.randn(shape[1], rank))
    sigma = torch.logspace(0, -1.5, rank)
    assert (sigma / sigma.norm()).min() >= 0.01
    low, high = BANDS[coefficients]
    out = torch.linalg.svdvals(reference_orthogonalize((u * sigma) @ v.T, coefficients))
    assert low <= out.min().item() and out.max().item() <= high


def test_polar_express_is_tighter_than_quintic() -> None:
    torch.manual_seed(2)
    matrix = torch.randn(48, 96) @ torch.diag(torch.logspace(0, -2, 96))
    spread = {c: torch.linalg.svdvals(reference_orthogonalize(matrix, c)) for c in COEFFICIENTS}
    assert (spread["polar_express"] - 1).abs().max() < (spread["quintic"] - 1).abs().max()


def test_batched_equals_one_at_a_time() -> None:
    torch.manual_seed(3)
    stack = torch.randn(5, 16, 48)
    batched = orthogonalize(stack, schedule("quintic", 5))
    for matrix, got in zip(stack, batched):
        assert torch.allclose(got, reference_orthogonalize(matrix), atol=1e-5)


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
def test_bfloat16_stays_within_the_stated_tolerance(coefficients: str) -> None:
    torch.manual_seed(4)
    stack = torch.randn(3, 64, 160)
    got = orthogonalize(stack.bfloat16(), schedule(coefficients, 5)).float()
    want = torch.stack([reference_orthogonalize(m, coefficients) for m in stack])
    assert relative_error(got, want) < BF16_RELATIVE_TOLERANCE


def test_rejects_tall_or_unbatched_input() -> None:
    with pytest.raises(ValueError, match="rows <= cols"):
        orthogonalize(torch.randn(2, 8, 4), schedule("quintic", 5))
    with pytest.raises(ValueError, match="batch, rows, cols"):
        orthogonalize(torch.randn(4, 8), schedule("quintic", 5))


def test_schedules() -> None:
    assert schedule("quintic", 3).steps == (QUINTIC,) * 3
    assert schedule("polar_express", 7).steps == POLAR_EXPRESS + (POLAR_EXPRESS[-1],) * 2
    assert schedule("polar_express", 2).steps == POLAR_EXPRESS[:2]
    with pytest.raises(ValueError, match="at least 1"):
        schedule("quintic", 0)
    with pytest.raises(ValueError, match="valid: 'quintic', 'polar_express'"):
        schedule("cubic", 5)  # type: ignore[arg-type]
