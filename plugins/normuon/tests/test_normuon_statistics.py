"""NorMuon's statistics against a hand-computed step: equal singular values follow the scalar quintic map."""

from __future__ import annotations

import pytest
import torch

import newcompute as nc
from newcompute_normuon import plugin
from newcompute_normuon.coefficients import schedule
from newcompute_normuon.optimizer import NorMuonAdamW
from newcompute_normuon.reference import ReferenceNorMuon

GROUP = {"optimizer": "normuon", "lr": 0.1, "weight_decay": 0.0, "ns_dtype": "float32", "momentum": 0.9}


def _param_and_grad() -> tuple[torch.nn.Parameter, torch.Tensor]:
    weight = torch.nn.Parameter(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    grad = torch.zeros(4, 8)
    grad[:, :4] = 3.0 * torch.eye(4)  # four orthogonal rows of one length: all singular values equal
    return weight, grad


def _stats(optimizer: NorMuonAdamW) -> dict[str, float]:
    reported = plugin.newcompute_optimizer_statistics(optimizer=optimizer)
    return {stat.name: value.item() for stat, value in reported["w"].items()}


def test_a_measured_step_matches_the_hand_computed_statistics() -> None:
    weight, grad = _param_and_grad()
    twin = torch.nn.Parameter(weight.detach().clone())
    optimizer = NorMuonAdamW([GROUP | {"params": [("w", weight)]}])
    oracle = ReferenceNorMuon([{**optimizer.param_groups[0], "params": [twin]}])
    weight.grad, twin.grad = grad.clone(), grad.clone()
    with nc.collect_statistics():
        optimizer.step()
    before = twin.detach().clone()
    oracle.step()
    stats = _stats(optimizer)
    expected_rms = ((before - twin.detach()) / 0.1).square().mean().sqrt().item()
    assert stats["update_rms"] == pytest.approx(expected_rms, rel=1e-4)
    # The first Nesterov source is (1 − β)(1 + β)·grad = s·[I | 0]: four singular values s, ‖·‖_F = 2s.
    # Each starts at s / (norm_scale·2s + eps) and follows σ ← aσ + bσ³ + cσ⁵; the residual is |σ² − 1|.
    plan = schedule("quintic", 5)
    s = (1 - 0.9) * (1 + 0.9) * 3.0
    sigma = s / (plan.norm_scale * 2 * s + plan.eps)
    for a, b, c in plan.steps:
        sigma = a * sigma + b * sigma**3 + c * sigma**5
    assert stats["ns_residual"] == pytest.approx(abs(sigma**2 - 1.0), rel=1e-3)
    assert stats["norm_factor_spread"] == pytest.approx(1.0)  # rows of equal length: equal factors


def test_steps_without_collection_report_nothing() -> None:
    weight, grad = _param_and_grad()
    optimizer = NorMuonAdamW([GROUP | {"params": [("w", weight)]}])
    weight.grad = grad
    optimizer.step()
    assert plugin.newcompute_optimizer_statistics(optimizer=optimizer) == {}


def test_the_core_reads_every_hidden_matrix_by_its_parameter_name() -> None:
    from newcompute.testing import build_tiny, sample_batch

    model = build_tiny().train()
    nc.apply(model, ["normuon"])
    optimizer = nc.build_optimizer(model, nc.OptimizerSettings(lr=1e-2))
    tokens = sample_batch()
    model(tokens, labels=tokens).loss.backward()
    with nc.collect_statistics():
        optimizer.step()
    stats = nc.read_statistics(model, optimizer=optimizer)
    matrices = {
        name for name, p in model.named_parameters() if p.ndim == 2 and "embed" not in name and "lm_head" not in name
    }
    assert {s.layer for s in stats} == matrices
    assert all(s.value > 0 for s in stats if s.statistic.name in ("update_rms", "ns_residual"))
    assert all(s.value >= 1.0 for s in stats if s.statistic.name == "norm_factor_spread")
