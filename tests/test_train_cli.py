"""``newcompute train`` / ``eval`` from the command line: a run reloads to its loss; bad input gets a clear error."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from tests_support import run_bounded
from typer.testing import CliRunner

from newcompute import run_files
from newcompute.cli.app import build_app
from newcompute.run_lock import RunLock
from newcompute.plugins import get_registry

SMALL = ["--model", "tiny", "--init", "scratch", "--batch-size", "4", "--micro-batch-size", "2", "--block-size", "32"]


def _invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args), catch_exceptions=False)


def _flat(text: str) -> str:
    """The text without line breaks and the borders of rich's error box, which wraps long messages."""
    return re.sub(r"[\s│]+", " ", text)


def test_train_then_eval_reports_the_same_loss(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trained = _invoke("train", *SMALL, "--steps", "4", "--max-tokens", "8192", "--eval-every", "2", "-o", str(run_dir))
    assert trained.exit_code == 0, trained.output
    output = _flat(trained.output)
    for shown in ("pydoc_data.topics", "byte-level tokenizer", "4 (as set)", "micro-batch 2 × accumulation 2"):
        assert shown in output
    if not torch.cuda.is_available():
        assert "CUDA graphs off: CUDA graph capture needs a CUDA GPU; this run is on cpu" in output
    assert f"Threads {len(os.sched_getaffinity(0))} (the cores this process may use" in output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"Final validation loss {summary['final_val_loss']:.4f}" in output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [
        ("train", 1),
        ("train", 2),
        ("eval", 2),
        ("train", 3),
        ("train", 4),
        ("eval", 4),
    ]

    evaluated = _invoke("eval", str(run_dir))
    assert evaluated.exit_code == 0, evaluated.output
    assert f"Validation loss {summary['final_val_loss']:.4f}" in _flat(evaluated.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "./nowhere/corpus.jsonl"], "nowhere/corpus.jsonl does not exist"),
        (["--block-size", "4096"], "block_size 4096 is larger than the model's context of 256 positions"),
        (["--model", "tinny"], "Did you mean 'tiny'?"),
        (["--micro-batch-size", "3"], "must be a multiple of micro_batch_size"),
        (["--fsdp"], "--fsdp runs under accelerate launch: add --num-processes N"),
        (["--num-processes", "0"], "Invalid value for '--num-processes'"),
        (["--report-to", "nothing"], "report_to"),
        (["--cuda-graphs", "on"], "--cuda-graphs on (train.cuda_graphs) needs a CUDA GPU; this run is on cpu"),
        (["--cuda-graphs", "yes"], "'train.cuda_graphs': Input should be 'auto', 'on' or 'off'"),
        (["--lr", "inf"], "'train.lr': Input should be a finite number (got inf)"),
        (["--precision", "fp16"], "'fp16' (--precision fp16) needs a GPU: on the CPU accelerate does not autocast"),
        (["--set", "train.betas=[2, -1]"], "'train.betas.0': Input should be less than 1 (got 2)"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], message: str) -> None:
    if ("--cuda-graphs" in args or "fp16" in args) and torch.cuda.is_available():
        pytest.skip("the error is for machines without a CUDA GPU")
    result = _invoke("train", *SMALL, "--steps", "1", *args)
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)


@pytest.mark.parametrize(
    ("args", "gpus", "message"),
    [
        (["--fsdp"], 1, "--num-processes 2: this machine shows 1 CUDA GPU and each process needs one of its own. "
                        "Use --num-processes 1 or fewer"),
        (["--batch-size", "6"], 0, "train.batch_size 6 must be a multiple of micro_batch_size × processes = 2 × 2 = 4"),
        (["--paradigm", "nope"], 0, "Unknown paradigm 'nope'. Installed paradigms:"),
        (["-o", "HELD"], 0, "already holds a run. Pass --resume to continue it"),
        (["--resume", "-o", "EMPTY"], 0, "--resume: EMPTY has no checkpoint to resume from"),
        (["--overwrite", "-o", "LOCKED"], 0, "LOCKED is in use by another newcompute command: pid {pid} on host"),
    ],
)
def test_settings_every_process_would_refuse_are_refused_once_before_the_launch(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    args: list[str],
    gpus: int,
    message: str,
) -> None:
    from newcompute.train import launch

    def launched(*args: object) -> int:
        raise AssertionError(f"launched {args}")

    run_files.write_text(tmp_path / "HELD", "metrics.jsonl", "")
    monkeypatch.chdir(tmp_path)
    held = RunLock(Path("LOCKED"))
    held.acquire()
    request.addfinalizer(held.release)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(launch.subprocess, "call", launched)
    result = _invoke("train", *SMALL, "--steps", "1", "--num-processes", "2", *args)
    assert result.exit_code == 2, result.output
    assert _flat(result.output).count(message.format(pid=os.getpid())) == 1, result.output


def test_unknown_text_column_names_the_columns(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"body": "some text " * 20}) for _ in range(20)) + "\n")
    result = _invoke("train", *SMALL, "--steps", "1", "--dataset", str(corpus), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "has no key 'text' (it has: body). Pass --text-column NAME." in _flat(result.output)


FIRST_PARTY = {"optical", "normuon"}


@pytest.mark.skipif(not FIRST_PARTY <= set(get_registry().paradigms), reason="optical and normuon are not installed")
def test_optical_and_normuon_compose_in_a_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _invoke(
        "train",
        *SMALL,
        "--paradigm",
        "optical",
        "--paradigm",
        "normuon",
        "--steps",
        "3",
        "--max-tokens",
        "8192",
        "-o",
        str(run_dir),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["paradigms"] == ["optical", "normuon"]
    evaluated = _invoke("eval", str(run_dir))
    assert f"Validation loss {summary['final_val_loss']:.4f}" in _flat(evaluated.output)


CTRL_C_AT_START = """
import os, signal, sys, time
import newcompute.train.setup as setup

def interrupted(*args, **kwargs):  # Ctrl-C arrives while the model loads
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(60)

setup.load_model = interrupted
from newcompute.cli.app import main
sys.argv = ["newcompute", "train", "--model", "tiny", "--init", "scratch", "--steps", "1", "-o", sys.argv[1]]
main()
"""


def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path: Path) -> None:
    result = run_bounded([sys.executable, "-c", CTRL_C_AT_START, str(tmp_path / "run")], limit_s=50)
    assert result.returncode == 130, result.stderr[-2000:]
    assert "Interrupted (Ctrl-C)." in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_a_keyboard_interrupt_inside_a_command_exits_130_and_releases_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from newcompute.train import setup

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(setup, "load_model", interrupted)
    result = _invoke("train", *SMALL, "--steps", "1", "-o", str(tmp_path))
    assert result.exit_code == 130 and "Interrupted (Ctrl-C)." in result.output
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one precision per process; a command asking for another needs the state reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_eval_says_what_precision_it_computes_in(tmp_path: Path, fresh_accelerate_state: None) -> None:
    if torch.cuda.is_available():
        pytest.skip("fp16 autocasts on a GPU")
    folder = tmp_path / "saved"
    saved = _invoke("transform", *SMALL[:4], "--set", 'train.mixed_precision="fp16"', "--save", str(folder))
    assert saved.exit_code == 0, saved.output
    evaluated = _invoke("eval", str(folder), "--max-blocks", "1", "--max-tokens", "4096", "--block-size", "32")
    assert evaluated.exit_code == 0, evaluated.output
    assert "Precision: fp32 on cpu (fp16 autocast is not available there)" in _flat(evaluated.output)


def test_environment_settings_reach_the_run_and_a_flag_wins_over_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWCOMPUTE_TRAIN__LR", "0.002")
    monkeypatch.setenv("NEWCOMPUTE_TRAIN__WARMUP_STEPS", "1")
    monkeypatch.setenv("NEWCOMPUTE_TRAIN__STEPS", "5")
    run_dir = tmp_path / "run"
    result = _invoke("train", *SMALL, "--steps", "2", "--max-tokens", "4096", "-o", str(run_dir))
    assert result.exit_code == 0, result.output
    record = (run_dir / "newcompute.toml").read_text()
    assert "lr = 0.002" in record and "steps = 2" in record and "warmup_steps = 1" in record

    monkeypatch.setenv("NEWCOMPUTE_TRAIN__LEARNING_RATE", "0.1")
    refused = _invoke("train", *SMALL, "--steps", "2", "-o", str(tmp_path / "other"))
    assert refused.exit_code == 2
    assert "environment variable NEWCOMPUTE_TRAIN__LEARNING_RATE: unknown key 'train.learning_rate'" in _flat(
        refused.output
    )
    assert not (tmp_path / "other").exists()
