"""Data-parallel scaling: tokens/s on 1 and N GPUs for each paradigm, on the same global batch.

Every cell is a real ``newcompute train --num-processes N`` run (accelerate
DDP) of a clm-400m-shaped Llama built from scratch; tokens/s is the median
over the steps after the warm-up, read from the run's ``metrics.jsonl``.
Because the global batch, seed and data order are the same, the loss curves
of the 1-GPU and N-GPU runs must agree up to bf16 noise; the largest gap is
printed beside the speed-up.

With ``--fsdp`` every run shards with FSDP2, the 1-GPU one too (FSDP2 over
one process): FSDP2 keeps bf16 parameters, which weight quantizers see, so
only a sharded baseline gives the same numerics as the sharded runs. The
unsharded run on the first GPU count is measured too, and the speed-up over
it printed beside, so sharding's own cost on one GPU stays in view.

    python3 benchmarks/scaling.py --gpus 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "bf16": [],
    "optical": ["--paradigm", "optical"],
    "mxfp8": ["--paradigm", "mxfp8"],
    "normuon": ["--paradigm", "normuon"],
}


def train(args: argparse.Namespace, variant: str, gpus: int, fsdp: bool) -> list[dict[str, float]] | None:
    name = f"{variant}-{gpus}gpu{'-fsdp' if fsdp else ''}"
    run_dir = Path(args.out) / name
    command = [
        sys.executable, "-m", "newcompute", "train",
        "--model", args.model, "--init", "scratch", *VARIANTS[variant],
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--micro-batch-size", str(args.micro_batch_size), "--block-size", str(args.block_size),
        "--lr", str(args.lr), "--eval-every", str(10 * args.steps), "--save-every", str(10 * args.steps),
        "--output-dir", str(run_dir), "--overwrite", "--num-processes", str(gpus),
        *(["--fsdp"] if fsdp else []),
    ]  # fmt: skip
    started = time.perf_counter()
    # its own process group, so a run over time is stopped with its launcher and every rank (and their GPUs)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(command, **pipes, start_new_session=True) as p:
        try:
            stdout, stderr = p.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            print(f"  {name}: no result, over {args.timeout} s", flush=True)
            return None
    log = Path(args.out) / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    if p.returncode != 0:
        errors = [line for line in stderr.splitlines() if "Error" in line or "error" in line]
        print(*errors[-20:], stderr[-3000:], sep="\n")
        print(f"  full output: {log}", flush=True)
        print(f"  {name}: failed with exit code {p.returncode}", flush=True)
        return None
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    print(f"  {name}: {time.perf_counter() - started:.0f} s wall", flush=True)
    return [r for r in records if r.get("kind") == "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clm-400m")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=4, help="Steps left out of the tokens/s median.")
    parser.add_argument("--batch-size", type=int, default=16, help="Global sequences per step.")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--out", default="/tmp/newcompute-scaling")
    parser.add_argument("--fsdp", action="store_true", help="Shard every run with FSDP2 instead of DDP.")
    args = parser.parse_args()

    def tokens_per_s(records: list[dict[str, float]]) -> float:
        return statistics.median(r["tokens_per_s"] for r in records[args.warmup :])

    base = args.gpus[0]
    rows = []
    for variant in args.variants:
        runs = {gpus: train(args, variant, gpus, args.fsdp) for gpus in args.gpus}
        unsharded = train(args, variant, base, fsdp=False) if args.fsdp else runs[base]
        if unsharded is None or any(records is None for records in runs.values()):
            continue
        speed = {g: tokens_per_s(runs[g]) for g in args.gpus}
        for gpus in args.gpus[1:]:
            gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(runs[base], runs[gpus], strict=True))
            ratio, over_unsharded = speed[gpus] / speed[base], speed[gpus] / tokens_per_s(unsharded)
            rows.append((variant, speed[base], gpus, speed[gpus], ratio, over_unsharded, gap))
            print(f"  {variant}: {ratio:.2f}× on {gpus} GPUs, max |Δloss| {gap:.4f}", flush=True)

    sharding = "FSDP2" if args.fsdp else "DDP"
    print(f"\n{args.model}, {sharding}, global batch {args.batch_size} × {args.block_size} tokens, {args.steps} steps")
    extra = ["vs unsharded"] if args.fsdp else []
    columns = ["variant", f"tok/s {base} GPU", "GPUs", "tok/s", "speed-up", *extra, "max |Δloss|"]
    print(f"{columns[0]:10s}", *(f"{c:>13s}" for c in columns[1:]))
    for variant, one, gpus, many, ratio, over_unsharded, gap in rows:
        cells = [f"{one:,.0f}", f"{gpus}", f"{many:,.0f}", f"{ratio:.2f}×", *([f"{over_unsharded:.2f}×"] * len(extra))]
        print(f"{variant:10s}", *(f"{c:>13s}" for c in [*cells, f"{gap:.4f}"]))


if __name__ == "__main__":
    main()
