"""``newcompute eval --tasks``: local task YAML offline, registry tasks refused at once without a network."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.errors import ConfigError
from newcompute.lm_tasks import check_reachable, select_tasks
from newcompute.train import train
from newcompute.train.runs import load_run
from test_train_paradigms import quiet, tiny_run

DATA = Path(__file__).parent / "data" / "lm_eval" / "tiny_mc.jsonl"

pytest.importorskip("lm_eval")


def _task_yaml(folder: Path) -> Path:
    """A multiple-choice task over the shipped jsonl, in lm-eval's task YAML format."""
    path = folder / "tiny_mc.yaml"
    path.write_text(
        "task: newcompute_tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {DATA}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return path


def _reference_accuracy(run_dir: Path) -> float:
    """The task scored directly: each choice's log-likelihood after the question, the best one against the answer."""
    model, tokenizer, _ = load_run(run_dir)
    model.eval()
    right = 0
    docs = [json.loads(line) for line in DATA.read_text().splitlines()]
    for doc in docs:
        context = tokenizer(doc["question"])["input_ids"]
        scores = []
        for choice in doc["choices"]:
            continuation = tokenizer(" " + choice)["input_ids"]
            ids = torch.tensor([context + continuation])
            with torch.no_grad():
                logits = model(input_ids=ids).logits.log_softmax(-1)[0]
            targets = ids[0, len(context):]
            scores.append(float(logits[len(context) - 1 : -1].gather(1, targets[:, None]).sum()))
        right += max(range(len(scores)), key=scores.__getitem__) == doc["answer"]
    return right / len(docs)


def test_a_local_task_yaml_scores_offline_and_is_saved_in_the_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run_dir = tmp_path / "run"
    train(tiny_run(run_dir, steps=2, eval_every=100), console=quiet())
    task = _task_yaml(tmp_path)
    result = CliRunner().invoke(build_app(), ["eval", str(run_dir), "--tasks", str(task), "--max-blocks", "1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "lm_eval.json").read_text())
    accuracy = saved["newcompute_tiny_mc"]["acc,none"]
    assert accuracy == pytest.approx(_reference_accuracy(run_dir))
    assert math.isclose(accuracy * 6, round(accuracy * 6))  # six questions
    plot = tmp_path / "c.png"
    compared = CliRunner().invoke(build_app(), ["compare", str(run_dir), "--format", "json", "--plot", str(plot)])
    row = json.loads(compared.stdout)["rows"][0]
    assert row["lm_eval.newcompute_tiny_mc.acc"] == accuracy


def test_a_registry_task_without_a_network_is_refused_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    selection = select_tasks(["hellaswag", str(_task_yaml(tmp_path))])
    assert selection.names == ["hellaswag", "newcompute_tiny_mc"] and selection.registry == ["hellaswag"]
    with pytest.raises(ConfigError, match="--tasks hellaswag: lm-eval's registry task"):
        check_reachable(selection, hub_reachable=False)
    check_reachable(selection, hub_reachable=True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the user says the data is cached
    check_reachable(selection, hub_reachable=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    result = CliRunner().invoke(build_app(), ["eval", "tiny", "--init", "scratch", "--tasks", "hellaswag"])
    assert result.exit_code == 2 and "not reachable from here" in result.output
    with pytest.raises(ConfigError, match="no such task YAML file"):
        select_tasks([str(tmp_path / "missing.yaml")])
    (tmp_path / "nameless.yaml").write_text("dataset_path: json\n")
    with pytest.raises(ConfigError, match="needs a 'task: NAME' key"):
        select_tasks([str(tmp_path / "nameless.yaml")])
