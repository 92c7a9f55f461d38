"""``newcompute inspect``: hand-computed errors in the table, JSON and CSV that parse to the schema, a heatmap."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from conftest import TestPlugin
from test_train_paradigms import quiet, tiny_run
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.train import train

BASE = ["inspect", "--model", "tiny", "--init", "scratch", "--block-size", "16", "--batches", "1", "--batch-size", "2"]
SCALED = [*BASE, "-p", "scale", "--set", "paradigm.scale.factor=2.0", "-p", "exact-attn"]


@pytest.fixture
def test_registry(monkeypatch: pytest.MonkeyPatch) -> nc.Registry:
    registry = nc.Registry()
    registry.register(TestPlugin(), name="test-plugin")
    monkeypatch.setattr(plugins, "_default", registry)
    return registry


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), args)
    return result.exit_code, result.output


def test_json_follows_the_schema_with_hand_computed_errors(test_registry: nc.Registry) -> None:
    code, out = _invoke([*SCALED, "--format", "json"])
    assert code == 0, out
    document = json.loads(out)
    assert document["schema"] == "newcompute.inspect/1"
    assert document["paradigms"] == ["scale", "exact-attn"] and document["model"] == "tiny"
    assert document["batches"] == 1 and document["tokens"] == 2 * 15 and math.isfinite(document["loss"])
    rows = document["rows"]
    linear = [r for r in rows if r["product"] == "linear"]
    attention = [r for r in rows if r["product"] in ("qk", "pv")]
    assert linear and attention
    for row in linear:
        # out = 2·exact: ‖out − exact‖ = ‖exact‖, so relative error 1, SNR 0 dB, cosine 1.
        assert row["paradigm"] == "scale" and row["relative_error"] == pytest.approx(1.0)
        assert row["snr_db"] == pytest.approx(0.0, abs=1e-6) and row["cosine"] == pytest.approx(1.0)
    for row in attention:
        assert row["paradigm"] == "exact-attn" and row["relative_error"] == 0.0 and row["snr_db"] is None


def test_csv_has_one_line_per_json_row_and_inf_for_exact_products(test_registry: nc.Registry) -> None:
    code, out = _invoke([*SCALED, "--format", "csv"])
    assert code == 0, out
    lines = list(csv.DictReader(io.StringIO(out)))
    _, as_json = _invoke([*SCALED, "--format", "json"])
    assert [(r["layer"], r["product"]) for r in lines] == [
        (r["layer"], r["product"]) for r in json.loads(as_json)["rows"]
    ]
    exact = [r for r in lines if r["product"] == "qk"]
    assert exact and all(float(r["snr_db"]) == math.inf for r in exact)
    assert all(float(r["relative_error"]) == pytest.approx(1.0) for r in lines if r["product"] == "linear")


def test_table_and_heatmap(test_registry: nc.Registry, tmp_path: Path) -> None:
    png = tmp_path / "heat.png"
    code, out = _invoke([*SCALED, "--heatmap", str(png)])
    assert code == 0, out
    assert "model.layers.0.mlp.up_proj" in out and "exact" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_to_a_file(test_registry: nc.Registry, tmp_path: Path) -> None:
    target = tmp_path / "out" / "inspect.json"
    code, out = _invoke([*SCALED, "--format", "json", "--output", str(target)])
    assert code == 0, out
    assert json.loads(target.read_text())["rows"]


def test_a_folder_that_is_not_a_run_is_refused_with_exit_2(test_registry: nc.Registry, tmp_path: Path) -> None:
    code, out = _invoke(["inspect", str(tmp_path)])
    assert code == 2 and "is not a run folder" in " ".join(out.split())


def test_an_unknown_statistic_column_lists_what_was_measured(test_registry: nc.Registry) -> None:
    code, out = _invoke([*SCALED, "--statistic", "nope"])
    assert code == 2 and "--statistic nope: not measured here" in " ".join(out.split())


def test_a_trained_optical_run_reports_its_statistics_on_its_own_data(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", {"optical": {}}, steps=2)
    train(run, console=quiet())
    code, out = _invoke(["inspect", str(tmp_path / "run"), "--batches", "1", "--format", "json"])
    assert code == 0, out
    document = json.loads(out)
    assert document["paradigms"] == ["optical"]
    rows = {(r["layer"], r["product"]): r for r in document["rows"]}
    assert ("model.layers.0.self_attn", "qk") in rows and ("model.layers.0.mlp.up_proj", "linear") in rows
    for row in rows.values():
        assert 0 < row["relative_error"] < 1 and 0 <= row["statistics"]["readout_clip_rate"] <= 1
    assert document["statistics"]["input_range_use"]["unit"] == "fraction"
    code, out = _invoke(["inspect", str(tmp_path / "run"), "--model", "tiny"])
    assert code == 2 and "is a saved run" in " ".join(out.split())


def test_inspect_and_sensitivity_take_the_model_and_data_flags() -> None:
    from newcompute.cli.flags import config_flags

    for command in ("inspect", "sensitivity"):
        names = {name for f in config_flags(command) for name in f.names}
        assert {"--model", "--init", "--dataset", "--block-size", "--seed", "--precision"} <= names
        assert "--steps" not in names and "--telemetry-every" not in names


def test_mx_exponent_histograms_are_lists_in_json_and_bin_columns_in_csv() -> None:
    args = [*BASE, "-p", "mxfp8"]
    code, out = _invoke([*args, "--format", "json"])
    assert code == 0, out
    document = json.loads(out)
    described = document["statistics"]["fwd_weight_exponent_histogram"]
    assert described["unit"] == "count" and described["bins"] == list(range(-127, 128))
    linear = [r for r in document["rows"] if r["product"] == "linear"]
    assert linear
    for row in linear:
        stats = row["statistics"]
        counts = stats["fwd_weight_exponent_histogram"]
        used = [e for e, c in zip(described["bins"], counts) if c > 0]
        # the histogram and the separately kept min / max agree on the exponents the blocks used
        assert (used[0], used[-1]) == (stats["fwd_weight_exponent_min"], stats["fwd_weight_exponent_max"])
    code, out = _invoke([*args, "--format", "csv"])
    assert code == 0, out
    lines = list(csv.DictReader(io.StringIO(out)))
    first = next(line for line in lines if line["layer"] == linear[0]["layer"] and line["product"] == "linear")
    expected = linear[0]["statistics"]["fwd_weight_exponent_histogram"]
    assert [float(first[f"fwd_weight_exponent_histogram[{e}]"]) for e in range(-127, 128)] == expected
    code, out = _invoke([*args, "--statistic", "fwd_weight_exponent_histogram"])
    assert code == 2 and "a histogram or series, not a table column" in " ".join(out.split())
