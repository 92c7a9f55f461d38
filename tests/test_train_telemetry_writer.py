"""The telemetry writer thread: the records it writes are those written in place; its failures and the run's end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel
from rich.console import Console
from test_train_paradigms import quiet, tiny_run
from torch import nn

import newcompute as nc
from newcompute import plugins
from newcompute.train import telemetry, train
from newcompute.train.background import BackgroundWork
from newcompute.train.metrics import read_metrics

ABS = nc.Statistic("abs_sum", "Sum of |x| over the measured rows", "value")
SPREAD = nc.Statistic("spread", "Smallest and largest measured input", "value", (0.0, 1.0))
LAYER = "model.layers.0.mlp.up_proj"
WRITER = "newcompute-telemetry"


class ProbeConfig(BaseModel):
    pass


class SummingLinear(nc.ReplacedLinear):
    def __init__(self, source: nn.Module) -> None:
        super().__init__(source)
        self.telemetry = nc.StatisticSums(["abs"], source.weight.device, minima=["low"], maxima=["high"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if nc.collecting_statistics():
            rows = nc.statistics_rows(x).detach().float()
            self.telemetry.add("abs", rows.abs().sum())
            self.telemetry.minimum("low", rows.min())
            self.telemetry.maximum("high", rows.max())
        return nn.functional.linear(x, self.weight_out_in(), self.bias)


class ProbePlugin:
    """Reports data-dependent statistics; notes which thread read them, and fails or lingers when told to."""

    def __init__(self, fail_on_read: int | None = None, slow_on_read: int | None = None) -> None:
        self.fail_on_read = fail_on_read
        self.slow_on_read = slow_on_read
        self.reads = 0
        self.threads: set[str] = set()

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("probe", "Sums what it sees", ProbeConfig, frozenset({nc.Role.LAYER}), capturable=True)]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        return SummingLinear(module) if nc.is_linear_like(module) else None

    @nc.hookimpl
    def newcompute_statistics(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        self.threads.add(threading.current_thread().name)
        if name == LAYER:
            self.reads += 1
            if self.reads == self.fail_on_read:
                raise ValueError("the sums of this layer went missing")
            if self.reads == self.slow_on_read:
                time.sleep(0.5)
        return {ABS: module.telemetry["abs"].clone(), SPREAD: module.telemetry.slots("low", 2).clone()}


def _registry(monkeypatch: pytest.MonkeyPatch, plugin: ProbePlugin) -> nc.Registry:
    registry = nc.Registry()
    registry.register(plugin, name="probe-plugin")
    monkeypatch.setattr(plugins, "_default", registry)
    return registry


def _run(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    background: bool,
    plugin: ProbePlugin,
    console: Console | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Train the tiny model with the writer thread on or off; the metrics.jsonl records, timings left out."""
    run = tiny_run(folder, {"probe": {}}, **{"steps": 6, "telemetry_every": 2, **settings})
    with monkeypatch.context() as patch:
        patch.setattr(telemetry, "writes_in_background", lambda model: background)
        train(run, registry=_registry(patch, plugin), console=console or quiet())
    return _metrics(folder)


def _metrics(folder: Path) -> list[dict[str, Any]]:
    def torn(message: str) -> None:
        raise AssertionError(message)

    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(folder, on_torn=torn)]


def _telemetry(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "telemetry"]


def test_the_writer_thread_writes_the_records_written_in_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    in_place, threaded = ProbePlugin(), ProbePlugin()
    expected = _run(tmp_path / "in_place", monkeypatch, False, in_place)
    found = _run(tmp_path / "threaded", monkeypatch, True, threaded)
    assert in_place.threads == {threading.main_thread().name} and threaded.threads == {WRITER}
    assert {r["step"] for r in _telemetry(expected)} == {2, 4, 6}
    assert next(r for r in _telemetry(expected) if r["layer"] == LAYER)["statistics"]["abs_sum"] > 0
    assert _telemetry(found) == _telemetry(expected)
    assert [r for r in found if r["kind"] != "telemetry"] == [r for r in expected if r["kind"] != "telemetry"]


def test_a_hook_failing_on_the_writer_thread_fails_the_run_as_in_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    errors: dict[bool, nc.PluginError] = {}
    records: dict[bool, list[dict[str, Any]]] = {}
    for background in (False, True):
        folder = tmp_path / str(background)
        with pytest.raises(nc.PluginError) as raised:
            _run(folder, monkeypatch, background, ProbePlugin(fail_on_read=2))
        errors[background], records[background] = raised.value, _metrics(folder)
    assert type(errors[True]) is type(errors[False]) and str(errors[True]) == str(errors[False])
    assert "probe-plugin" in str(errors[True]) and "newcompute_statistics" in str(errors[True])
    assert isinstance(errors[True].__cause__, ValueError)
    # The second measured step (4) failed before any of its records: those of step 2 are whole, and the run
    # stopped before measuring step 6 (the threaded run may have finished step 5 meanwhile).
    assert _telemetry(records[True]) == _telemetry(records[False])
    assert {r["step"] for r in _telemetry(records[True])} == {2}
    trained = [r["step"] for r in records[True] if r["kind"] == "train"]
    assert trained[:4] == [1, 2, 3, 4] and max(trained) <= 5


def test_the_run_ends_after_the_last_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plugin = ProbePlugin(slow_on_read=2)
    records = _run(tmp_path / "run", monkeypatch, True, plugin, steps=4)
    assert plugin.threads == {WRITER}
    kinds = [(r["kind"], r["step"]) for r in records]
    last = max(i for i, (kind, step) in enumerate(kinds) if kind == "telemetry" and step == 4)
    final = next(i for i, r in enumerate(records) if r["kind"] == "eval" and r["final"])
    assert last < final


def test_background_work_runs_one_at_a_time_and_raises_where_waited_for() -> None:
    work = BackgroundWork("test")
    seen: list[str] = []

    def first() -> None:
        seen.append("first started")
        time.sleep(0.1)
        seen.append("first ended")

    work.start(first)
    work.start(lambda: seen.append("second started"))
    work.wait()
    assert seen == ["first started", "first ended", "second started"]
    failure = KeyError("gone")

    def failing() -> None:
        raise failure

    work.start(failing)
    with pytest.raises(KeyError) as raised:
        work.wait()
    assert raised.value is failure
    work.wait()
    work.start(failing)
    assert work.join() is failure and work.finished


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_writer_runs_beside_graph_replays_and_writes_the_same_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Step 2's write (slowed) is in flight when step 3 captures its graph: the capture waits for it."""
    found: dict[bool, list[dict[str, Any]]] = {}
    for background in (False, True):
        plugin, console = ProbePlugin(slow_on_read=1), quiet()
        found[background] = _run(
            tmp_path / str(background), monkeypatch, background, plugin, console, steps=8, cuda_graphs="on"
        )
        shown = " ".join(console.file.getvalue().split())
        assert "failed" not in shown, shown
        assert plugin.threads == ({WRITER} if background else {threading.main_thread().name})
    expected, threaded = _telemetry(found[False]), _telemetry(found[True])
    assert {r["step"] for r in expected} == {2, 4, 6, 8}
    assert [(r["step"], r["layer"]) for r in threaded] == [(r["step"], r["layer"]) for r in expected]
    for got, want in zip(threaded, expected):
        assert set(got["statistics"]) == set(want["statistics"])
        for name, value in want["statistics"].items():
            assert got["statistics"][name] == pytest.approx(value, rel=1e-6), (got["step"], got["layer"], name)


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    found = []
    for events in {p.parent for p in folder.rglob("events.out.tfevents.*")}:
        accumulator = EventAccumulator(str(events), size_guidance={SCALARS: 0})
        accumulator.Reload()
        if tag in accumulator.Tags()[SCALARS]:
            found += [(s.step, s.value) for s in accumulator.Scalars(tag)]
    return sorted(found)


def test_tensorboard_gets_the_writer_threads_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    tag = f"telemetry/{LAYER}/abs_sum"
    drawn = {}
    for background in (False, True):
        plugin = ProbePlugin()
        _run(tmp_path / str(background), monkeypatch, background, plugin, report_to=["tensorboard"])
        assert plugin.threads == ({WRITER} if background else {threading.main_thread().name})
        drawn[background] = _scalars(tmp_path / str(background), tag)
    assert [step for step, _ in drawn[False]] == [2, 4, 6]
    assert drawn[True] == drawn[False]


def test_with_mlflow_the_records_are_written_on_the_training_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MLflow's active run belongs to the thread that started it: a writer thread's values would start another."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlflow-store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    plugin = ProbePlugin()
    _run(tmp_path / "run", monkeypatch, True, plugin, report_to=["mlflow"], project="proj")
    assert plugin.threads == {threading.main_thread().name}
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    history = client.get_metric_history(logged.info.run_id, f"telemetry/{LAYER}/abs_sum")
    assert sorted(m.step for m in history) == [2, 4, 6]
