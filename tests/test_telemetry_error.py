"""Core-measured error against hand-computed cases: exact products, a known scale, a real format."""

from __future__ import annotations

import math

import pytest
import torch

import newcompute as nc
from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.telemetry.error import ErrorProbe, probe_errors
from tests.conftest import tiny


def _use(registry: nc.Registry, name: str, **config: object) -> ParadigmUse:
    return resolve_paradigm(registry, name, dict(config))


def _run(model: torch.nn.Module) -> list:
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), probe_errors(model) as probe:
        model(tokens)
    return probe.results()


def test_exact_layers_and_attention_have_infinite_snr(registry: nc.Registry) -> None:
    model = tiny()
    report = nc.apply(model, [_use(registry, "scale", factor=1.0), "exact-attn"], registry=registry)
    results = {(r.name, r.kind): r for r in _run(model)}
    assert {name for name, kind in results if kind == "linear"} == set(report.replaced)
    attention = {name for name, kind in results if kind in ("qk", "pv")}
    assert attention == set(report.attention["exact-attn"])
    for r in results.values():
        assert r.snr_db == math.inf and r.relative_error == 0.0 and r.cosine == pytest.approx(1.0)


def test_doubled_output_has_unit_relative_error_and_zero_db(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, [_use(registry, "scale", factor=2.0)], registry=registry)
    results = _run(model)
    assert results
    for r in results:
        # out = 2·ref: ‖out−ref‖ = ‖ref‖, so relative error 1, SNR 10·log10(1) = 0 dB, direction unchanged.
        assert r.relative_error == pytest.approx(1.0, rel=1e-9)
        assert r.snr_db == pytest.approx(0.0, abs=1e-7)
        assert r.cosine == pytest.approx(1.0, rel=1e-9)


def test_probe_leaves_the_model_as_it_was(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, [_use(registry, "scale", factor=1.0), "exact-attn"], registry=registry)
    tokens = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(tokens).logits
        _run(model)
        after = model(tokens).logits
    assert torch.equal(before, after)
    assert not any(m._forward_hooks for m in model.modules())
    assert all("qk" not in m.__dict__ for m in model.modules())


def test_sums_match_a_hand_computed_case() -> None:
    probe = ErrorProbe()
    ref = torch.tensor([3.0, 4.0])
    out = torch.tensor([3.0, 5.0])
    probe._accumulate(("layer", "linear"), out, ref)
    (r,) = probe.results()
    # ‖out−ref‖² = 1, ‖ref‖² = 25, ‖out‖² = 34, out·ref = 29.
    assert r.relative_error == pytest.approx(1 / 5)
    assert r.snr_db == pytest.approx(10 * math.log10(25))
    assert r.cosine == pytest.approx(29 / math.sqrt(25 * 34))


def test_a_real_format_has_finite_positive_snr() -> None:
    model = tiny()
    nc.apply(model, ["mxfp8"])
    results = _run(model)
    assert results
    for r in results:
        assert 0 < r.relative_error < 1 and math.isfinite(r.snr_db) and r.snr_db > 10 and r.cosine > 0.99
