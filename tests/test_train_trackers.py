"""--report-to several trackers at once, under --project and --run-name; a missing tracker is named before the run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.config import RunConfig, TrainSettings
from newcompute.errors import ConfigError
from newcompute.train import trackers

TINY = ["--steps", "3", "--batch-size", "2", "--micro-batch-size", "2", "--block-size", "16", "--max-tokens", "2048"]


def test_trackers_are_a_list_and_old_single_values_still_read() -> None:
    assert TrainSettings().report_to == []
    assert TrainSettings(report_to="none").report_to == []  # records written when one tracker was the most
    assert TrainSettings(report_to="tensorboard").report_to == ["tensorboard"]
    assert TrainSettings(report_to=["mlflow", "tensorboard", "mlflow"]).report_to == ["mlflow", "tensorboard"]
    with pytest.raises(ValueError, match="report_to"):
        RunConfig.model_validate({"train": {"report_to": "tensorboard,nothing"}})


def test_every_missing_tracker_is_named_with_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(trackers._AVAILABLE, "tensorboard", lambda: True)
    monkeypatch.setitem(trackers._AVAILABLE, "mlflow", lambda: False)
    monkeypatch.setitem(trackers._AVAILABLE, "wandb", lambda: False)
    assert trackers.checked_trackers(["tensorboard"]) == ["tensorboard"] and trackers.checked_trackers([]) is None
    with pytest.raises(ConfigError, match=r"mlflow, wandb are not installed: pip install mlflow wandb"):
        trackers.checked_trackers(["tensorboard", "mlflow", "wandb"])
    result = CliRunner().invoke(build_app(), ["train", *TINY, "--report-to", "mlflow", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "mlflow is not installed: pip install mlflow" in " ".join(result.output.split())


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("mlflow") is None,
    reason="needs both tensorboard and mlflow installed",
)
def test_tensorboard_and_mlflow_at_once_under_the_project_and_run_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = (tmp_path / "mlflow-store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # recent MLflow refuses a file store unless told
    run = tmp_path / "run"
    args = ["train", *TINY, "--report-to", "tensorboard,mlflow", "--project", "proj", "--run-name", "first", "-o"]
    result = CliRunner().invoke(build_app(), [*args, str(run)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if line["kind"] == "train"]
    assert len(losses) == 3

    events = EventAccumulator(str(run / "proj"))
    events.Reload()
    assert [round(e.value, 5) for e in events.Scalars("train/loss")] == [round(v, 5) for v in losses]

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("proj")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "first" and logged.data.params["train.report_to"] == "['tensorboard', 'mlflow']"
    history = client.get_metric_history(logged.info.run_id, "train/loss")
    assert [round(m.value, 5) for m in sorted(history, key=lambda m: m.step)] == [round(v, 5) for v in losses]
    assert "proj" in (run / ".newcompute-files").read_text().split()
