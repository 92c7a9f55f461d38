"""The telemetry writer thread: the records it writes are those written in place; its failures and the run's end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel
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
        return [nc.Paradigm("probe", "Sums what it sees", ProbeConfig, frozenset({nc.Role.LAYER}))]

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
    folder: Path, monkeypatch: pytest.MonkeyPatch, background: bool, plugin: ProbePlugin, steps: int = 6
) -> list[dict[str, Any]]:
    """Train the tiny model with the writer thread on or off; the metrics.jsonl records, timings left out."""
    monkeypatch.setattr(telemetry, "writes_in_background", lambda model: background)
    run = tiny_run(folder, {"probe": {}}, steps=steps, telemetry_every=2)
    try:
        train(run, registry=_registry(monkeypatch, plugin), console=quiet())
    finally:
        monkeypatch.undo()
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
