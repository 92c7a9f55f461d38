"""The NorMuon step on cases checkable by hand, for both the reference and the fast optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from normuon_helpers import normuon_group, scalar_newton_schulz

from newcompute_normuon import NorMuonAdamW, ReferenceNorMuon, reference_orthogonalize


def _one_step(make, weight: torch.Tensor, grad: torch.Tensor, **options) -> torch.Tensor:
    """The weight after one step of the optimizer built by ``make``."""
    param = torch.nn.Parameter(weight.clone())
    param.grad = grad.clone()
    make([normuon_group([param], **options)]).step()
    return param.detach()


OPTIMIZERS = [pytest.param(NorMuonAdamW, id="fast"), pytest.param(ReferenceNorMuon, id="reference")]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_first_step_on_a_diagonal_gradient_by_hand(make) -> None:
    """G = diag(3, 1). Newton–Schulz maps the diagonal entries to o₁, o₂ (the scalar quintic).
    v = (1 − β₂)·(oᵢ²/2), so each row is divided by its own RMS and both rows become equal;
    restoring the Frobenius norm gives diag(r, r) with r = √((o₁² + o₂²)/2). lr = 1, no decay."""
    o1, o2 = scalar_newton_schulz(torch.tensor([3.0, 1.0]), "quintic").tolist()
    r = math.sqrt((o1**2 + o2**2) / 2)
    after = _one_step(make, torch.zeros(2, 2), torch.diag(torch.tensor([3.0, 1.0])), lr=1.0)
    assert after.tolist() == [pytest.approx([-r, 0.0], abs=1e-6), pytest.approx([0.0, -r], abs=1e-6)]


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("shape", [(16, 16), (12, 40), (40, 12)])
def test_first_step_equalises_rows_and_keeps_the_stated_rms(make, shape: tuple[int, int]) -> None:
    """On the first step v is each row's own mean square, so every row of the update ends with the
    same norm, ‖O‖_F/√rows; the update's RMS is ‖O‖_F·√max(1, rows/cols)/√(rows·cols)."""
    torch.manual_seed(0)
    grad = torch.randn(*shape)
    rows, cols = shape
    ortho_norm = reference_orthogonalize(grad).norm().item()
    update = -_one_step(make, torch.zeros(shape), grad, lr=1.0)
    scale = math.sqrt(max(1.0, rows / cols))
    assert update.norm(dim=1).tolist() == pytest.approx([ortho_norm / math.sqrt(rows) * scale] * rows, rel=1e-4)
    rms = update.pow(2).mean().sqrt().item()
    assert rms == pytest.approx(ortho_norm * scale / math.sqrt(rows * cols), rel=1e-4)
    assert 0.5 / math.sqrt(cols) < rms < 1.2 / math.sqrt(cols)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_rows_are_output_neurons_for_conv1d(make) -> None:
    """A Conv1D weight is stored in×out: its update is the transpose of the nn.Linear one."""
    torch.manual_seed(1)
    weight, grad = torch.randn(10, 6), torch.randn(10, 6)
    linear = _one_step(make, weight, grad, lr=0.1)
    conv1d = _one_step(make, weight.T.contiguous(), grad.T.contiguous(), lr=0.1, transposed=True)
    assert torch.allclose(conv1d.T, linear, atol=1e-6)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_fused_blocks_are_separate_matrices(make) -> None:
    """splits = [4, 2, 2] updates like three separate matrices stacked."""
    torch.manual_seed(2)
    weight, grad = torch.randn(8, 5), torch.randn(8, 5)
    fused = _one_step(make, weight, grad, lr=0.1, splits=(4, 2, 2))
    parts = [_one_step(make, weight[a:b], grad[a:b], lr=0.1) for a, b in ((0, 4), (4, 6), (6, 8))]
    assert torch.allclose(fused, torch.cat(parts), atol=1e-6)
    assert not torch.allclose(fused, _one_step(make, weight, grad, lr=0.1), atol=1e-3)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_weight_decay_is_decoupled(make) -> None:
    """Zero gradient: only the decay acts, W·(1 − lr·wd). Non-zero: decay adds exactly −lr·wd·W."""
    torch.manual_seed(3)
    weight = torch.randn(6, 9)
    decayed = _one_step(make, weight, torch.zeros(6, 9), lr=0.5, weight_decay=0.1)
    assert torch.equal(decayed, weight * (1 - 0.5 * 0.1))
    grad = torch.randn(6, 9)
    with_decay = _one_step(make, weight, grad, lr=0.5, weight_decay=0.1)
    without = _one_step(make, weight, grad, lr=0.5, weight_decay=0.0)
    assert torch.allclose(with_decay - without, -0.5 * 0.1 * weight, atol=1e-6)


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize(("nesterov", "sign"), [(False, 1.0), (True, -1.0)])
def test_nesterov_changes_the_second_direction(make, nesterov: bool, sign: float) -> None:
    """G₁ = G, G₂ = −G/2, β = 0.95. Momentum: M₂ = (1−β)(β − ½)·G points along +G, so the second
    update repeats the first. Nesterov: (1−β)·G₂ + β·M₂ = −0.003625·G points along −G, so it
    reverses. Newton–Schulz is odd and scale-free and the row normalisation only sees O², so the
    second update is exactly ±the first."""
    torch.manual_seed(4)
    grad = torch.randn(6, 9)
    param = torch.nn.Parameter(torch.zeros(6, 9))
    optimizer = make([normuon_group([param], nesterov=nesterov, lr=1.0)])
    steps = []
    for g in (grad, -0.5 * grad):
        before = param.detach().clone()
        param.grad = g.clone()
        optimizer.step()
        steps.append(param.detach() - before)
    assert torch.allclose(steps[1], sign * steps[0], atol=1e-5)
