"""``--num-processes``: the same command under ``accelerate launch``, with the same global batch as one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import DistributedType
from tests_support import run_bounded

from newcompute.train.launch import launcher_command, train_arguments
from newcompute.train.setup import distribution_text, fsdp2_plugin

ARGS = [
    "--model",
    "tiny",
    "--init",
    "scratch",
    "--steps",
    "3",
    "--batch-size",
    "4",
    "--micro-batch-size",
    "2",
    "--block-size",
    "32",
    "--max-tokens",
    "8192",
]


RUN_LIMIT_S = 300

LOSS_RTOL_GPU = 2e-3
"""On GPUs the trainer runs in bf16 autocast: all-reducing gradients instead of accumulating them sums in
another order, an fp32 weight moves by an ulp, and bf16 rounding of the next forward can turn that into a
relative loss difference of order 1e-3. On CPU (fp32, gloo) the curves agree to float rounding."""


TWO_PROCESSES = pytest.mark.skipif(
    0 < torch.cuda.device_count() < 2,
    reason="on a CUDA machine each process takes a GPU of its own, so 2 processes need 2 GPUs",
)


def _assert_same_curve(got: list[float], want: list[float], cpu_rtol: float) -> None:
    rtol = LOSS_RTOL_GPU if torch.cuda.is_available() else cpu_rtol
    assert got == pytest.approx(want, rel=rtol), f"losses {got} vs {want}"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_bounded(args, RUN_LIMIT_S)


def test_launcher_flags_are_dropped_and_fsdp2_is_requested() -> None:
    assert train_arguments(["--model", "tiny", "--num-processes", "4", "--fsdp", "--num-processes=2", "--lr", "1"]) == [
        "--model",
        "tiny",
        "--lr",
        "1",
    ]
    command = launcher_command(["--model", "tiny"], 4, fsdp=True)
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "4"]
    assert command[command.index("--fsdp_version") + 1] == "2" and "--use_fsdp" in command
    assert command[-4:] == ["-m", "newcompute.train", "--model", "tiny"]
    assert "--multi_gpu" in launcher_command([], 2, fsdp=False)


def _train_losses(run_dir: Path) -> list[float]:
    return [
        r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"
    ]


@pytest.mark.slow
@TWO_PROCESSES
def test_two_processes_train_on_the_same_global_batch_as_one(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "newcompute.train", *ARGS]
    single = _run([*cli, "-o", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-2000:]
    double = _run([*cli, "-o", str(tmp_path / "two"), "--num-processes", "2"])
    assert double.returncode == 0, double.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    _assert_same_curve(_train_losses(tmp_path / "two"), _train_losses(tmp_path / "one"), cpu_rtol=1e-5)
    assert (tmp_path / "two" / "model.safetensors").is_file()


@TWO_PROCESSES
def test_telemetry_of_two_processes_is_written_once_per_layer_and_step(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "newcompute.train", *ARGS, "--paradigm", "mxfp8", "--telemetry-every", "1"]
    done = _run([*cli, "-o", str(tmp_path / "two"), "--num-processes", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["kind"] == "telemetry"]
    keys = [(r["step"], r["layer"]) for r in records]
    assert len(keys) == len(set(keys)) and {step for step, _ in keys} == {1, 2, 3}
    assert len(keys) == 3 * 14  # tiny: 2 blocks of 7 linear layers, each measured once a step
    assert all(0.0 <= r["statistics"]["fwd_input_saturation"] <= 1.0 for r in records)


@TWO_PROCESSES
def test_a_checkpoint_of_two_processes_resumes_in_one(tmp_path: Path) -> None:
    """World size may change between a checkpoint and its resume (DDP on 2 processes → 1 process)."""
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "newcompute.train", *ARGS[:5], "4", *ARGS[6:], "--save-every", "2", "-o", str(run)]
    double = _run([*cli, "--num-processes", "2"])
    assert double.returncode == 0, double.stderr[-3000:]
    uninterrupted = _train_losses(run)
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    shutil.rmtree(checkpoints[-1])
    (run / "model.safetensors").unlink()
    single = _run([*cli, "--resume"])
    assert single.returncode == 0, single.stderr[-3000:]
    assert "resuming from step-00000002" in " ".join(single.stdout.split())
    _assert_same_curve(_train_losses(run), uninterrupted, cpu_rtol=1e-5)


def test_the_run_says_how_its_processes_share_the_work() -> None:
    assert distribution_text(DistributedType.FSDP, 8, fsdp_requested=True) == "FSDP2 over 8 processes"
    assert distribution_text(DistributedType.FSDP, 1, fsdp_requested=True) == "FSDP2 over 1 process"
    assert distribution_text(DistributedType.MULTI_GPU, 2, fsdp_requested=False) == "DDP over 2 processes"
    assert "--fsdp is not applied on this machine" in distribution_text(DistributedType.MULTI_CPU, 2, True)
    assert distribution_text(DistributedType.NO, 1, fsdp_requested=False) == "one process"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerate runs FSDP2 on GPUs only")
@pytest.mark.parametrize(
    "flags", [[], ["--paradigm", "optical", "--paradigm", "normuon"]], ids=["plain", "optical-normuon"]
)
def test_an_fsdp2_checkpoint_resumes_in_one_process(tmp_path: Path, flags: list[str]) -> None:
    """A sharded FSDP2 checkpoint (of 2 GPUs where there are 2) is picked up where it stopped by a single process
    that does not shard: weights, paradigm buffers (optical ranges) and optimizer state (NorMuon's sharded momenta)."""
    gpus = min(2, torch.cuda.device_count())
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "newcompute.train", *ARGS[:5], "4", *ARGS[6:], *flags, "--save-every", "2"]
    cli += ["-o", str(run)]
    sharded = _run([*cli, "--num-processes", str(gpus), "--fsdp"])
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert f"FSDP2 over {gpus} process" in " ".join(sharded.stdout.split())
    assert json.loads((run / "summary.json").read_text())["processes"] == gpus
    assert (run / "checkpoints" / "step-00000002" / "pytorch_model_fsdp_0").is_dir()
    uninterrupted = _train_losses(run)
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    (run / "model.safetensors").unlink()
    single = _run([*cli, "--resume"])
    assert single.returncode == 0, single.stderr[-3000:]
    assert "resuming from step-00000002" in " ".join(single.stdout.split())
    _assert_same_curve(_train_losses(run), uninterrupted, cpu_rtol=1e-5)


@pytest.mark.slow
@TWO_PROCESSES
@pytest.mark.parametrize(
    ("flags", "cpu_rtol"),
    [
        (["--paradigm", "mxfp8"], 1e-4),
        (["--paradigm", "normuon"], 1e-4),
        (["--paradigm", "fp8", "--set", "paradigm.fp8.attention=true"], 2e-3),
    ],
    ids=["mxfp8", "normuon", "fp8-attention"],
)
def test_paradigms_train_on_two_processes_as_on_one(tmp_path: Path, flags: list[str], cpu_rtol: float) -> None:
    """MX and NorMuon are deterministic and see the same global batch split into the same micro-batches either
    way, so only the order of the gradient sums differs (all-reduce vs accumulation).

    Per-tensor FP8 scales by an amax agreed across processes: two processes take one scale from both
    micro-batches, while one process scales each micro-batch by its own amax (and delayed scaling has seen
    the first when it casts the second), so the curves differ by quantization noise. It is here because it
    all-reduces inside the forward, in attention too: in the routing check before training and in uneven
    validation shares, a collective that only some processes start stalls or crashes the run."""
    cli = [sys.executable, "-m", "newcompute.train", *ARGS, *flags]
    single = _run([*cli, "-o", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-2000:]
    double = _run([*cli, "-o", str(tmp_path / "two"), "--num-processes", "2"])
    assert double.returncode == 0, double.stderr[-3000:]
    _assert_same_curve(_train_losses(tmp_path / "two"), _train_losses(tmp_path / "one"), cpu_rtol=cpu_rtol)


def test_fsdp2_reduces_gradients_and_returns_outputs_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fsdp2_plugin("bf16") is None  # not launched with --use_fsdp
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert fsdp2_plugin("no") is None  # fp32 training needs no policy
    policy = fsdp2_plugin("bf16").mixed_precision_policy
    dtypes = (policy.param_dtype, policy.reduce_dtype, policy.output_dtype)
    assert dtypes == (torch.bfloat16, torch.float32, torch.float32)
