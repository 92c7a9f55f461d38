"""``--telemetry-every N``: records of exactly the measured steps, nothing collected otherwise; compare plots them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from test_train_paradigms import quiet, tiny_run
from torch import nn
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.train import train
from newcompute.train.metrics import read_metrics

CALLS = nc.Statistic("forward_calls", "Forward calls measured in the step", "count")
ROWS = nc.Statistic("rows", "Token rows measured in the step", "count")


class CountConfig(BaseModel):
    pass


class CountingLinear(nc.ReplacedLinear):
    ever_collected = False

    def __init__(self, source: nn.Module) -> None:
        super().__init__(source)
        self.telemetry = nc.StatisticSums(["calls", "rows"], source.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if nc.collecting_statistics():
            CountingLinear.ever_collected = True
            self.telemetry.add("calls", 1.0)
            self.telemetry.add("rows", nc.statistics_rows(x).reshape(-1, x.shape[-1]).shape[0])
        return nn.functional.linear(x, self.weight_out_in(), self.bias)


class CountPlugin:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("count", "Counts measured calls", CountConfig, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return CountingLinear(module) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_statistics(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return {CALLS: module.telemetry["calls"].clone(), ROWS: module.telemetry["rows"].clone()}


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> nc.Registry:
    registry = nc.Registry()
    registry.register(CountPlugin(), name="count-plugin")
    monkeypatch.setattr(plugins, "_default", registry)
    CountingLinear.ever_collected = False
    return registry


def test_measured_steps_write_one_record_per_layer(registry: nc.Registry, tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", {"count": {}}, steps=4, telemetry_every=2, telemetry_stride=4)
    train(run, registry=registry, console=quiet())
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "telemetry"]
    assert sorted({r["step"] for r in records}) == [2, 4]
    layers = {r["layer"] for r in records}
    assert "model.layers.0.mlp.up_proj" in layers and all(r["paradigm"] == "count" for r in records)
    assert len(records) == 2 * len(layers) and all(r["row_stride"] == 4 for r in records)
    # 4 sequences a step in micro-batches of 2: each layer runs twice in the measured step, counted afresh,
    # and sees every 4th of the 32 token rows of each of its 2 sequences: 2 · 2 · 8 rows.
    assert all(r["statistics"] == {"forward_calls": 2.0, "rows": 32.0} for r in records)


def test_without_the_option_nothing_is_collected(registry: nc.Registry, tmp_path: Path) -> None:
    train(tiny_run(tmp_path / "run", {"count": {}}, steps=2), registry=registry, console=quiet())
    assert not CountingLinear.ever_collected
    assert not [r for r in read_metrics(tmp_path / "run") if r["kind"] == "telemetry"]


def test_compare_plots_a_statistic_of_a_layer_across_runs(registry: nc.Registry, tmp_path: Path) -> None:
    for name in ("a", "b"):
        train(tiny_run(tmp_path / name, {"count": {}}, steps=2, telemetry_every=1), registry=registry, console=quiet())
    png = tmp_path / "stat.png"
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(tmp_path / "loss.png")]
    result = CliRunner().invoke(
        build_app(), [*args, "--statistic", "forward_calls", "--layer", "*.mlp.up_proj", "--statistic-plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(build_app(), [*args, "--statistic", "nope", "--statistic-plot", str(png)])
    assert result.exit_code == 2
    assert "No telemetry of statistic 'nope'" in " ".join(result.output.split())
    assert "Recorded statistics: forward_calls" in " ".join(result.output.split())


def test_the_flag_reaches_the_run_config() -> None:
    from newcompute.cli.flags import config_flags

    names = {name for f in config_flags("train") for name in f.names}
    assert {"--telemetry-every", "--telemetry-stride"} <= names


def test_a_stride_below_one_is_refused_naming_the_field(tmp_path: Path) -> None:
    args = ["train", "--model", "tiny", "--telemetry-stride", "0", "--output-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 2
    assert "telemetry_stride" in " ".join(result.output.split()), result.output
    assert not (tmp_path / "run").exists()
