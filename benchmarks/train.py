"""Training throughput and MFU of the trainer's own step, side by side in one process.

Each variant is a real ``newcompute train`` session (accelerate, bf16
autocast with fp32 master weights, the default AdamW, linear schedule,
gradient clipping) built by ``build_session``; only the optimizer step
``Trainer.train_step`` is timed, which ends with the host reading the loss,
so wall time per step is exact. Warm-up steps (which also compile) are
dropped and the median of the rest is reported. "First step" is the time
to the first step of the compiled model: under ``--compile`` the trainer
runs its first step eagerly and compiles on the second, so it covers both.

MFU counts model FLOPs per token as 3 × (2 × Σ in·out over every linear
layer, head included) for the forward and backward matmuls, plus
3 × 2 × 2 × T × d_attn per layer for Q·Kᵀ and P·V (PaLM's convention,
full rather than causal attention), and divides by a bf16 peak measured in
the same run (an 8192³ matmul) as well as by the H100 SXM's 989 TFLOP/s
dense bf16 datasheet figure.

    python benchmarks/train.py                          # clm-400m, 8 × 1024 tokens, eager and compiled
    python benchmarks/train.py --shape 24x1536          # NorMuon benchmark shape: 24 layers, width 1536
    python benchmarks/train.py --shape tiny --block 128 --steps 3 --warmup 1 --variants eager   # CPU smoke test
    python benchmarks/train.py --variants eager,graphs,optical@eager,optical@graphs   # a paradigm's cost per step

A variant is ``[PARADIGM@]MODE``: MODE is ``eager``, ``compile`` (``--compile``), ``graphs``
(``--cuda-graphs``) or ``compile+graphs``; with a paradigm (``optical``, ``mxfp8``, ``normuon``…,
``+``-joined for several) the step time is also given as a ratio to the baseline variant of the same
mode. ``--profile`` prints the CUDA kernels that take the most time over three steps of each variant.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from transformers import LlamaConfig

from newcompute import ReplacedLinear
from newcompute.config import RunConfig
from newcompute.plugins import Registry, get_registry
from newcompute.train.display import RunDisplay
from newcompute.train.loop import Trainer
from newcompute.train.setup import build_session

DATASHEET_TFLOPS = 989.4

SHAPES = {
    "clm-400m": {"model": {"name": "clm-400m", "init": "scratch"}},
    "tiny": {"model": {"name": "tiny", "init": "scratch"}},
}


def _write_24x1536(folder: Path) -> str:
    """A config-only model folder: 24 layers, width 1536, MLP 4096, vocab 49152, tied head (679.6M parameters)."""
    LlamaConfig(
        vocab_size=49152,
        hidden_size=1536,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=24,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    ).save_pretrained(folder)
    return str(folder)


def flops_per_token(model: nn.Module, block: int) -> float:
    linear = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, (nn.Linear, ReplacedLinear))
    )
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = config.num_hidden_layers * 2 * 2 * block * config.num_attention_heads * head_dim
    return 3.0 * (2.0 * linear + attention)


def measured_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * size**3 / statistics.median(times) / 1e12


MODES = {"eager": (False, False), "compile": (True, False), "graphs": (False, True), "compile+graphs": (True, True)}


def parse_variant(variant: str) -> tuple[list[str], str]:
    """``optical+normuon@graphs`` → (["optical", "normuon"], "graphs")."""
    paradigms, _, mode = variant.rpartition("@")
    if mode not in MODES:
        raise SystemExit(f"variant {variant!r}: the mode after '@' must be one of {', '.join(MODES)}")
    return [p for p in paradigms.split("+") if p], mode


def profile_steps(trainer: Trainer, steps: int = 3, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as recorded:
        for _ in range(steps):
            trainer.train_step()
    return recorded.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)


def run_variant(
    model: dict[str, Any], variant: str, batch: int, block: int, warmup: int, steps: int, profiled: bool
) -> dict[str, Any]:
    paradigms, mode = parse_variant(variant)
    compiled, graphs = MODES[mode]
    with tempfile.TemporaryDirectory() as folder:
        run = RunConfig.model_validate(
            {
                **model,
                "train": {
                    "steps": 10_000,
                    "batch_size": batch,
                    "micro_batch_size": batch,
                    "block_size": block,
                    "lr": 1e-4,
                    "compile": compiled,
                    "cuda_graphs": graphs,
                    "output_dir": folder,
                },
                "data": {"validation_max_blocks": 1},
                "paradigm": {name: {} for name in paradigms},
            }
        )
        session = build_session(run, registry=get_registry() if paradigms else Registry(), overwrite=True)
        trainer = Trainer(session, RunDisplay(Console(file=io.StringIO()), enabled=False), on_step=None)
        settling = 2 if compiled else 1  # a compiled run's first step is eager, its second compiles
        started = time.perf_counter()
        first = [trainer.train_step() for _ in range(settling)][0]
        first_seconds = time.perf_counter() - started
        for _ in range(warmup - settling):
            trainer.train_step()
        seconds = [trainer.train_step().seconds for _ in range(steps)]
        unwrapped = session.accelerator.unwrap_model(session.model)
        result = {
            "variant": variant,
            "params": session.plan.params,
            "tokens_per_step": batch * block,
            "first_step_s": first_seconds,
            "first_loss": first.loss,
            "median_step_s": statistics.median(seconds),
            "flops_per_token": flops_per_token(unwrapped, block),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            "precision": session.accelerator.mixed_precision,
        }
        if profiled and torch.cuda.is_available():
            print(f"--- {variant}: CUDA kernels over 3 steps ---\n{profile_steps(trainer)}", flush=True)
        del trainer, session, unwrapped
    torch._dynamo.reset()  # the recompile limit counts per code object across variants
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result["tokens_per_s"] = result["tokens_per_step"] / result["median_step_s"]
    result["model_tflops"] = result["tokens_per_s"] * result["flops_per_token"] / 1e12
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=[*SHAPES, "24x1536"], default="clm-400m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", default="eager,compile", help="comma-separated [PARADIGM@]MODE, see above")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of each variant")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as config_folder:
        model = (
            {"model": {"name": _write_24x1536(Path(config_folder)), "init": "scratch"}}
            if args.shape == "24x1536"
            else SHAPES[args.shape]
        )
        peak = measured_peak_tflops() if torch.cuda.is_available() else None
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(
            f"{args.shape}: batch {args.batch} × block {args.block} on {device}; measured bf16 matmul peak: "
            + (f"{peak:.0f} TFLOP/s" if peak else "n/a"),
            flush=True,
        )
        results = []
        for variant in args.variants.split(","):
            result = run_variant(model, variant, args.batch, args.block, args.warmup, args.steps, args.profile)
            if peak:
                result["mfu_measured_peak"] = result["model_tflops"] / peak
                result["mfu_datasheet"] = result["model_tflops"] / DATASHEET_TFLOPS
            results.append(result)
            mfu = (
                f", MFU {result['mfu_measured_peak']:.1%} of measured peak, {result['mfu_datasheet']:.1%} of datasheet"
                if peak
                else ""
            )
            print(
                f"{variant:8s} {result['tokens_per_s']:>10,.0f} tok/s  {result['median_step_s'] * 1e3:7.1f} ms/step  "
                f"{result['model_tflops']:6.1f} TFLOP/s{mfu}; first step {result['first_step_s']:.1f} s; "
                f"peak memory {result['peak_memory_gib'] or 0:.1f} GiB; {result['params']:,} params; "
                f"{result['flops_per_token'] / 1e9:.3f} GFLOP/token",
                flush=True,
            )
    for result in results[1:]:
        ratio = result["tokens_per_s"] / results[0]["tokens_per_s"]
        print(f"{result['variant']} / {results[0]['variant']} throughput: {ratio:.3f}×")
    baselines = {parse_variant(r["variant"])[1]: r for r in results if not parse_variant(r["variant"])[0]}
    for result in results:
        paradigms, mode = parse_variant(result["variant"])
        if paradigms and mode in baselines:
            result["step_ratio"] = result["median_step_s"] / baselines[mode]["median_step_s"]
            print(f"{result['variant']} step time / {mode} baseline: {result['step_ratio']:.3f}×")
    if args.out is not None:
        args.out.write_text(
            json.dumps({"shape": args.shape, "device": device, "peak_tflops": peak, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
