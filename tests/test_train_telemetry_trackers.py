"""Vector statistics during training: lists in metrics.jsonl, summaries as scalars, histograms in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from test_train_paradigms import quiet, tiny_run
from torch import nn

import newcompute as nc
from newcompute import plugins
from newcompute.train import train
from newcompute.train.metrics import read_metrics
from newcompute.train.telemetry_trackers import bucket_limits, summaries

ROWS = nc.Statistic("rows_histogram", "Forward calls per micro-batch size", "count", (1.0, 2.0, 3.0))
SERIES = nc.Statistic("calls_and_seven", "Calls, then the constant 7", "value", (0.0, 1.0))
LAYER = "model.layers.0.mlp.up_proj"


class RowsConfig(BaseModel):
    pass


class RowsLinear(nc.ReplacedLinear):
    """Counts each measured call in the bin of its number of sequences (micro-batch size 1, 2 or 3)."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__(source)
        self.telemetry = nc.StatisticSums(["calls"], source.weight.device, histograms={"rows": 3})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if nc.collecting_statistics():
            self.telemetry.add("calls", 1.0)
            self.telemetry.count("rows", torch.tensor([x.shape[0] - 1], device=x.device))
        return nn.functional.linear(x, self.weight_out_in(), self.bias)


class RowsPlugin:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("rows", "Counts rows per call", RowsConfig, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return RowsLinear(module) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_statistics(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        calls = module.telemetry["calls"]
        return {ROWS: module.telemetry.histogram("rows").clone(), SERIES: torch.stack([calls, calls * 0 + 7])}


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> nc.Registry:
    registry = nc.Registry()
    registry.register(RowsPlugin(), name="rows-plugin")
    monkeypatch.setattr(plugins, "_default", registry)
    return registry


def test_bucket_limits_sit_halfway_between_bins_and_summaries_weigh_by_count() -> None:
    assert bucket_limits((-1.0, 0.0, 2.0)) == [-0.5, 1.0, 3.0]
    assert summaries(ROWS, [1.0, 0.0, 3.0]) == {"mean": (1 + 9) / 4, "count": 4.0}
    assert summaries(SERIES, [2.0, 7.0]) == {"max": 7.0, "newest": 2.0}


def test_vector_statistics_are_lists_in_metrics_jsonl(registry: nc.Registry, tmp_path: Path) -> None:
    train(tiny_run(tmp_path / "run", {"rows": {}}, steps=2, telemetry_every=2), registry=registry, console=quiet())
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "telemetry" and r["layer"] == LAYER]
    # one measured step (2), two micro-batches of 2 sequences: two calls, both in the bin of size 2
    assert [(r["step"], r["statistics"]) for r in records] == [
        (2, {"rows_histogram": [0.0, 2.0, 0.0], "calls_and_seven": [2.0, 7.0]})
    ]


def test_tensorboard_gets_the_histogram_and_the_summaries(registry: nc.Registry, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, SCALARS, EventAccumulator

    run = tiny_run(tmp_path / "run", {"rows": {}}, steps=2, telemetry_every=1, report_to=["tensorboard"])
    train(run, registry=registry, console=quiet())
    folders = {p.parent for p in (tmp_path / "run").rglob("events.out.tfevents.*")}
    events = []
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={HISTOGRAMS: 0, SCALARS: 0})
        accumulator.Reload()
        events.append(accumulator)
    tag = f"telemetry/{LAYER}/rows_histogram"
    drawn = [a for a in events if tag in a.Tags()[HISTOGRAMS]]
    assert len(drawn) == 1
    histograms = drawn[0].Histograms(tag)
    assert [h.step for h in histograms] == [1, 2]
    value = histograms[0].histogram_value
    # only the used bucket is kept: bin 2 covers (1.5, 2.5]
    assert (value.min, value.max, value.num, value.sum, value.sum_squares) == (2.0, 2.0, 2.0, 4.0, 8.0)
    assert list(value.bucket_limit) == [2.5] and list(value.bucket) == [2.0]
    series = drawn[0].Histograms(f"telemetry/{LAYER}/calls_and_seven")[0].histogram_value
    assert (series.min, series.max, series.num) == (2.0, 7.0, 2.0)
    scalars = {tag for a in events for tag in a.Tags()[SCALARS]}
    assert {f"{tag}/mean", f"{tag}/count", f"telemetry/{LAYER}/calls_and_seven/max"} <= scalars
    mean = next(a for a in events if f"{tag}/mean" in a.Tags()[SCALARS]).Scalars(f"{tag}/mean")
    assert [m.value for m in mean] == [2.0, 2.0]
