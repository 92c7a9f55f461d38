"""``--telemetry-error``: the core's error of every product on the measured steps, hand-computed for a scaled layer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_train_paradigms import quiet, tiny_run

import newcompute as nc
from newcompute.config import RunConfig
from newcompute.train import train
from newcompute.train.metrics import read_metrics

LAYER = "model.layers.0.mlp.up_proj"


def test_a_scaled_layer_has_the_error_its_factor_gives(registry: nc.Registry, tmp_path: Path) -> None:
    run = tiny_run(
        tmp_path / "run", {"scale": {"factor": 3.0}}, steps=2, telemetry_every=2, telemetry_error=True
    )
    train(run, registry=registry, console=quiet())
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "telemetry"]
    assert {r["step"] for r in records} == {2}
    stats = next(r["statistics"] for r in records if r["layer"] == LAYER)
    # out = 3·ref: ‖out − ref‖/‖ref‖ = 2, SNR = 10·log10(1/4) dB, cosine 1 (same direction).
    assert stats["relative_error"] == pytest.approx(2.0, rel=1e-6)
    assert stats["snr_db"] == pytest.approx(10 * math.log10(1 / 4), rel=1e-6)
    assert stats["cosine"] == pytest.approx(1.0, rel=1e-6)
    assert next(r["paradigm"] for r in records if r["layer"] == LAYER) == "scale"


def test_without_the_flag_no_error_is_recorded(registry: nc.Registry, tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", {"scale": {"factor": 3.0}}, steps=1, telemetry_every=1)
    train(run, registry=registry, console=quiet())
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "telemetry"]
    assert all("relative_error" not in r["statistics"] for r in records)


def test_the_error_probe_needs_measured_steps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="telemetry_error needs telemetry_every"):
        RunConfig.model_validate({"model": {"name": "tiny"}, "train": {"telemetry_error": True}})


def test_the_flag_alone_is_refused_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from newcompute.cli.app import build_app

    args = ["train", "--model", "tiny", "--init", "scratch", "--telemetry-error", "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 2, result.output
    assert "telemetry_error needs telemetry_every" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()
