"""The cost of telemetry: training steps with it off and every 10 steps, ``inspect`` and ``sensitivity`` times.

Issue 18's targets: with telemetry off a step takes what it took before;
``--telemetry-every 10`` costs at most 5 % on the clm-400m GPU step; ``inspect``
of clm-400m takes at most 30 s on one GPU, ``sensitivity`` of clm-60m over
all its layers at most 2 minutes.

The step part builds real ``newcompute train`` sessions and runs the
trainer's own loop body (measured steps collect, then write their records)
for ``--steps`` steps after ``--warmup``; it reports the mean step time,
which includes the measured steps, so the ratio is the whole cost. The
timed steps start half an interval before a measured step, so each
interval of a whole number of them holds one measured step and the write of
its records, as in a long run; the wait for the last write is timed too. The
warm-up also runs two measured steps (the first runs eagerly, the second
records its graph under ``@graphs``), as any run longer than twice the
interval has done before its steps settle. The two
commands run as subprocesses, timed from start to exit (imports, model
build and data packing included), as a user waits for them.

    python benchmarks/telemetry.py                                   # all three parts, on the GPU
    python benchmarks/telemetry.py --parts steps --variants mxfp8@graphs,optical@eager
    python benchmarks/telemetry.py --shape tiny --block 64 --steps 20 --warmup 2 --parts steps   # CPU smoke test
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from newcompute.config import RunConfig
from newcompute.plugins import get_registry
from newcompute.train.display import RunDisplay
from newcompute.train.loop import Trainer
from newcompute.train.metrics import MetricsLog
from newcompute.train.setup import Session, build_session

EVERY = 10


def _session_trainer(
    shape: str, paradigm: str, graphs: bool, batch: int, block: int, every: int | None, folder: str
) -> tuple[Session, Trainer]:
    run = RunConfig.model_validate(
        {
            "model": {"name": shape, "init": "scratch"},
            "train": {
                "steps": 10_000,
                "batch_size": batch,
                "micro_batch_size": batch,
                "block_size": block,
                "lr": 1e-4,
                "cuda_graphs": graphs,
                "telemetry_every": every,
                "output_dir": folder,
            },
            "data": {"validation_max_blocks": 1},
            "paradigm": {paradigm: {}},
        }
    )
    session = build_session(run, registry=get_registry(), overwrite=True)
    trainer = Trainer(session, RunDisplay(Console(file=io.StringIO()), enabled=False), on_step=None)
    trainer.metrics = MetricsLog(session.run_dir, session.accelerator.is_main_process)
    if trainer.graphed is not None:
        trainer.graphed.warn = lambda message: print(f"  {paradigm}: {message}", flush=True)
    return session, trainer


def _loop_seconds(trainer: Trainer, steps: int) -> tuple[float, float, float, float]:
    """The run loop's body for ``steps`` steps, measured steps and deferred records as ``Trainer.run`` has them.

    Returns the mean step time (the wait for the last records included), the mean time of a measured step,
    that of the step after one (which hands the measured step's records to the writer thread while its GPU
    work runs), and the wait for the last write at the end, so a cost shows where it is.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds: list[tuple[bool, float]] = []
    started = time.perf_counter()
    for _ in range(steps):
        measured = trainer.telemetry.due(trainer.step + 1)
        if measured:
            trainer.telemetry.flush(trainer.metrics, trainer.session.accelerator)
        with trainer.telemetry.measuring(measured):
            outcome = trainer.train_step(measured=measured)
        trainer.step += 1
        if measured:
            trainer.telemetry.defer(trainer.step)
        seconds.append((measured, outcome.seconds))
    waiting = time.perf_counter()
    trainer.telemetry.flush(trainer.metrics, trainer.session.accelerator)
    trainer.telemetry.wait()
    ended = time.perf_counter()
    mean = (ended - started) / steps
    measured_s = [s for m, s in seconds if m]
    after_s = [s for (m, _), (_, s) in zip(seconds, seconds[1:]) if m]
    return mean, sum(measured_s) / max(len(measured_s), 1), sum(after_s) / max(len(after_s), 1), ended - waiting


def step_times(shape: str, variant: str, batch: int, block: int, warmup: int, steps: int) -> dict[str, Any]:
    paradigm, _, mode = variant.partition("@")
    graphs = mode == "graphs"
    result: dict[str, Any] = {"variant": variant}
    for label, every in (("off", None), (f"every_{EVERY}", EVERY)):
        with tempfile.TemporaryDirectory() as folder:
            session, trainer = _session_trainer(shape, paradigm, graphs, batch, block, every, folder)
            for _ in range(warmup):
                trainer.train_step()
            for _ in range(2 if every else 0):
                with trainer.telemetry.measuring(True):
                    trainer.train_step(measured=True)
            trainer.step = EVERY // 2
            result[f"{label}_step_s"], measured_s, after_s, last_wait = _loop_seconds(trainer, steps)
            if every:
                result["measured_step_s"], result["after_measured_step_s"] = measured_s, after_s
                result["last_write_wait_s"] = last_wait
            trainer.metrics.close()
            del trainer, session
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["ratio"] = result[f"every_{EVERY}_step_s"] / result["off_step_s"]
    return result


def timed_command(args: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "newcompute", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"newcompute {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    tail = done.stdout.strip().splitlines()[-2:]
    return {"command": "newcompute " + " ".join(args), "seconds": seconds, "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="steps,inspect,sensitivity")
    parser.add_argument("--shape", default="clm-400m", help="model of the step part")
    parser.add_argument("--variants", default="mxfp8@eager,mxfp8@graphs,optical@eager,optical@graphs")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--inspect-model", default="clm-400m")
    parser.add_argument("--sensitivity-model", default="clm-60m")
    parser.add_argument("--paradigm", default="mxfp4", help="paradigm of the inspect and sensitivity parts")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"telemetry benchmark on {device}", flush=True)
    results: dict[str, Any] = {"device": device}
    if "steps" in parts:
        results["steps"] = []
        for variant in args.variants.split(","):
            row = step_times(args.shape, variant, args.batch, args.block, args.warmup, args.steps)
            results["steps"].append(row)
            print(
                f"{args.shape} {variant:16s} off {row['off_step_s'] * 1e3:8.1f} ms/step, --telemetry-every {EVERY} "
                f"{row[f'every_{EVERY}_step_s'] * 1e3:8.1f} ms/step: {row['ratio']:.3f}× (a measured step "
                f"{row['measured_step_s'] * 1e3:.1f} ms, the step writing its records "
                f"{row['after_measured_step_s'] * 1e3:.1f} ms, the wait for the last write "
                f"{row['last_write_wait_s'] * 1e3:.1f} ms)",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as folder:
        if "inspect" in parts:
            results["inspect"] = timed_command(
                ["inspect", "--model", args.inspect_model, "--init", "scratch", "-p", args.paradigm,
                 "--format", "json", "--output", str(Path(folder) / "inspect.json")]
            )
            print(f"{results['inspect']['command']}: {results['inspect']['seconds']:.1f} s", flush=True)
        if "sensitivity" in parts:
            results["sensitivity"] = timed_command(
                ["sensitivity", "--model", args.sensitivity_model, "--init", "scratch", "-p", args.paradigm,
                 "--toml", str(Path(folder) / "plan.toml"), "--plot", str(Path(folder) / "plan.png")]
            )
            print(f"{results['sensitivity']['command']}: {results['sensitivity']['seconds']:.1f} s", flush=True)
            print("\n".join(results["sensitivity"]["tail"]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
