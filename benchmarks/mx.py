"""Benchmark the mx plugin's simulated MXFP8 against bf16, torchao's emulation and mase-triton.

Everything is measured in one process on one GPU and printed as ratios to
the bf16 baseline measured right next to it:

1. the fused quantize-dequantize kernel: effective bandwidth with the
   portable rounding and with the GPU's FP8 cast, two operands in one launch
   or two, and host time per launch;
2. one linear layer, forward + backward, M = 8192 and K, N in {1024 … 8192}:
   bf16 ``nn.Linear``, ours (``mxfp8`` recipe), torchao's emulated MX linear;
   forward only: bf16, ours, mase-triton's ``MXFPLinearPTQ`` (inference-only);
3. a whole training step of ``newcompute train`` on clm-400m (dim 960, 30
   layers, 15 heads, 5 KV heads, MLP 3328, vocab 49152), batch 8 × 1024,
   bf16 autocast, timed by benchmarks/train.py's code: bf16 vs ``mxfp8``,
   launched eagerly and with ``--cuda-graphs`` (``--compile`` on request).

Usage: ``python benchmarks/mx.py [--quick] [--json results.json] [--steps-variants ...]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SIZES = (1024, 2048, 4096, 8192)
TOKENS = 8192
MXFP8_ROLES = {
    "fwd_input": "e4m3",
    "fwd_weight": "e4m3",
    "dgrad_grad_output": "e5m2",
    "dgrad_weight": "e4m3",
    "wgrad_grad_output": "e5m2",
    "wgrad_input": "e4m3",
}


def bench(fn: Callable[[], Any], warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median milliseconds of ``fn`` (triton.testing.do_bench: CUDA events, L2 flushed between runs)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def bench_graphed(fn: Callable[[], Any]) -> float | None:
    """Like :func:`bench`, replaying ``fn`` from a CUDA graph: GPU time without Python launch overhead."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return bench(graph.replay)
    except Exception:  # a capture failure only loses this column
        traceback.print_exc()
        return None


def kernel_bandwidth(results: dict[str, Any]) -> None:
    """The pair kernel with the portable rounding vs the GPU's FP8 cast, and one launch for two operands vs two."""
    from newcompute_mx.formats import FORMATS
    from newcompute_mx.kernels import mx_pair, mx_pairs

    e4m3, e5m2 = FORMATS["e4m3"], FORMATS["e5m2"]
    rows = []
    for shape in ((8192, 1024), (8192, 4096), (8192, 8192)):
        x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
        moved = 3 * x.numel() * x.element_size()  # one read, two writes
        copy_ms = bench(lambda x=x: x.clone())
        portable = bench(lambda x=x: mx_pair(x, e4m3, e5m2, 32, False, torch.bfloat16, hardware_cast=False))
        cast = bench(lambda x=x: mx_pair(x, e4m3, e5m2, 32, False, torch.bfloat16))
        rows.append({"shape": shape, "clone_ms": copy_ms, "portable_ms": portable, "fp8_cast_ms": cast})
        print(
            f"  {shape[0]} x {shape[1]} bf16, both axes: portable rounding {portable * 1e3:.1f} us "
            f"({moved / portable / 1e6:.0f} GB/s), FP8 cast {cast * 1e3:.1f} us ({moved / cast / 1e6:.0f} GB/s): "
            f"{portable / cast:.2f}x faster; x.clone() {copy_ms * 1e3:.1f} us ({2 * moved / 3 / copy_ms / 1e6:.0f} GB/s)"
        )
    activations = torch.randn(TOKENS, 1024, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(1024, 1024, device="cuda", dtype=torch.float32)
    jobs = [(activations, e4m3, e4m3), (weight, e4m3, e4m3)]
    launches = {
        "two launches": lambda: [mx_pair(t, last, rows, 32, False, torch.bfloat16) for t, last, rows in jobs],
        "one launch": lambda: mx_pairs(jobs, 32, False, torch.bfloat16),
    }
    operands = {name: {"eager_ms": bench(fn), "graph_ms": bench_graphed(fn)} for name, fn in launches.items()}

    def compare(key: str) -> str:
        apart, together = operands["two launches"][key], operands["one launch"][key]
        if apart is None or together is None:
            return "n/a"
        return f"{apart * 1e3:.1f} / {together * 1e3:.1f} us ({apart / together:.2f}x)"

    print(
        f"  a linear's forward operands ({TOKENS} x 1024 bf16 input, 1024 x 1024 fp32 weight), two launches / one: "
        f"eager {compare('eager_ms')}, CUDA graph {compare('graph_ms')}"
    )
    results["kernel"] = {"pair": rows, "forward_operands": operands, "launch_us": launch_overhead()}


def launch_overhead() -> dict[str, float]:
    """Host time per call on a tiny tensor, with and without the direct launcher (CPU-bound by design)."""
    from newcompute_mx import kernels
    from newcompute_mx.formats import FORMATS

    small = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    timings = {}
    for direct in (True, False):
        kernels._pairs_launcher.enabled = direct
        for _ in range(20):
            kernels.mx_pair(small, FORMATS["e4m3"], FORMATS["e4m3"], 32, False, torch.bfloat16)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(2000):
            kernels.mx_pair(small, FORMATS["e4m3"], FORMATS["e4m3"], 32, False, torch.bfloat16)
        torch.cuda.synchronize()
        timings["direct" if direct else "triton"] = (time.perf_counter() - start) / 2000 * 1e6
    kernels._pairs_launcher.enabled = True
    print(
        f"  host time per mx_pair call: {timings['direct']:.1f} us with the direct launcher, "
        f"{timings['triton']:.1f} us through Triton's launch path"
    )
    return timings


def _torchao_linear() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """torchao's MX training matmul with KernelPreference.EMULATED (its location moved between releases)."""
    try:
        try:
            from torchao.prototype.moe_training.mxfp8_linear import mx_mm
        except ImportError:
            from torchao.prototype.mx_formats.mx_linear import mx_mm
        from torchao.prototype.mx_formats.config import (
            MXFP8Dim0CastKernelChoice,
            MXFP8Dim1CastKernelChoice,
            ScaleCalculationMode,
        )
        from torchao.quantization.quantize_.common.kernel_preference import KernelPreference
    except Exception:  # torchao is optional here
        traceback.print_exc()
        return None

    def run(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return mx_mm.apply(
            x,
            w,
            torch.float8_e4m3fn,
            torch.float8_e4m3fn,
            torch.float8_e5m2,
            32,
            KernelPreference.EMULATED,
            MXFP8Dim0CastKernelChoice.TORCH,
            MXFP8Dim1CastKernelChoice.TORCH,
            ScaleCalculationMode.FLOOR,
            False,
        )

    return run


def _mase_linear(linear: nn.Linear) -> nn.Module | None:
    try:
        from mase_triton.mxfp.layers import MXFPLinearPTQ
        from mase_triton.mxfp.meta import MXFP8_E4M3_fn

        return MXFPLinearPTQ.from_linear(linear, MXFP8_E4M3_fn, MXFP8_E4M3_fn, None, "XqWqB", "separate")
    except Exception:  # mase-triton is optional here
        traceback.print_exc()
        return None


def linear_layers(results: dict[str, Any], sizes: tuple[int, ...]) -> None:
    from newcompute_mx.layer import QuantizedLinear
    from newcompute_mx.quantizers import MXQuantizer

    torchao_mm = _torchao_linear()
    warm = torch.randn(TOKENS, 1024, device="cuda", dtype=torch.bfloat16)
    bench(lambda: warm @ warm.t())
    rows = []
    print(
        f"  {'K':>5} {'N':>5} | fwd+bwd ms: bf16   ours (x)        torchao (x)     "
        "| CUDA graph: bf16  ours (x)      | fwd ms: bf16   ours (x)        mase (x)"
    )
    for k in sizes:
        for n in sizes:
            linear = nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            ours = QuantizedLinear(linear, MXQuantizer(MXFP8_ROLES, 32, "floor"))
            x = torch.randn(TOKENS, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            grad = torch.randn(TOKENS, n, device="cuda", dtype=torch.bfloat16)
            params = [x, linear.weight]

            def train(module: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
                return lambda: torch.autograd.grad(module(x), params, grad)

            row: dict[str, Any] = {"K": k, "N": n}
            row["bf16_fb"] = bench(train(linear))
            row["ours_fb"] = bench(train(ours))
            row["torchao_fb"] = bench(train(lambda t: torchao_mm(t, linear.weight))) if torchao_mm else None
            row["bf16_graph"] = bench_graphed(train(linear))
            row["ours_graph"] = bench_graphed(train(ours))
            with torch.no_grad():
                row["bf16_f"] = bench(lambda: linear(x))
                row["ours_f"] = bench(lambda: ours(x))
                mase = _mase_linear(linear)
                row["mase_f"] = bench(lambda: mase(x)) if mase is not None else None
            rows.append(row)

            def ratio(key: str, base: str) -> str:
                return f"{row[key]:7.3f} ({row[key] / row[base]:4.2f}x)" if row[key] is not None else "    n/a        "

            print(
                f"  {k:>5} {n:>5} | {row['bf16_fb']:7.3f} {ratio('ours_fb', 'bf16_fb')} {ratio('torchao_fb', 'bf16_fb')}"
                f" | {row['bf16_graph'] or float('nan'):7.3f} "
                f"{ratio('ours_graph', 'bf16_graph') if row['bf16_graph'] else 'n/a'}"
                f" | {row['bf16_f']:7.3f} {ratio('ours_f', 'bf16_f')} {ratio('mase_f', 'bf16_f')}",
                flush=True,
            )
            del linear, ours, x, grad
    results["linear"] = rows
    for key, label in (("fb", "eager"), ("graph", "CUDA graph")):
        ratios = [r[f"ours_{key}"] / r[f"bf16_{key}"] for r in rows if r[f"ours_{key}"] and r[f"bf16_{key}"]]
        if ratios:
            print(f"  ours fwd+bwd / bf16 ({label}): median {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x")


STEP_VARIANTS = ("eager", "mxfp8@eager", "graphs", "mxfp8@graphs", "compile", "mxfp8@compile")
"""``[PARADIGM@]MODE`` as in benchmarks/train.py: eager launches, ``--cuda-graphs`` or ``--compile``."""


def _trainer_benchmark() -> Any:
    """benchmarks/train.py as a module: the step is timed through the real trainer, by one piece of code."""
    spec = importlib.util.spec_from_file_location("train_benchmark", Path(__file__).with_name("train.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_step(results: dict[str, Any], steps: int, batch: int, profile: bool, variants: list[str]) -> None:
    """clm-400m's ``newcompute train`` step under ``mxfp8`` and without, each mode against its own baseline."""
    trainer = _trainer_benchmark()
    model = trainer.SHAPES["clm-400m"]
    timings: dict[str, dict[str, Any]] = {}
    for name in variants:
        result = trainer.run_variant(model, name, batch, 1024, 4, steps, profile)
        timings[name] = result
        print(
            f"  {name}: median step {result['median_step_s'] * 1e3:.1f} ms over {steps} steps "
            f"({result['params'] / 1e6:.0f}M params, peak {result['peak_memory_gib'] or 0:.1f} GiB)",
            flush=True,
        )
    for name, result in timings.items():
        paradigms, mode = trainer.parse_variant(name)
        if paradigms and mode in timings:
            ratio = result["median_step_s"] / timings[mode]["median_step_s"]
            print(f"  whole training step {name} / {mode}: {ratio:.2f}x")
    results["training_step"] = {name: r["median_step_s"] * 1e3 for name, r in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and steps (a smoke test)")
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--skip", nargs="*", default=[], choices=["kernel", "linear", "step"])
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of each step variant")
    parser.add_argument(
        "--steps-variants",
        nargs="*",
        default=["eager", "mxfp8@eager", "graphs", "mxfp8@graphs"],
        choices=STEP_VARIANTS,
        help="which training-step variants to time (the compiled ones take a minute or two to compile)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/mx.py needs a CUDA GPU", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(f"device: {results['device']}, torch {torch.__version__}")
    if "kernel" not in args.skip:
        print("[1] fused MX quantize-dequantize kernel, 8192 x 8192 bf16, both axes")
        kernel_bandwidth(results)
    if "linear" not in args.skip:
        print(f"[2] linear layer, M = {TOKENS}, bf16, mxfp8 recipe (E4M3 operands, E5M2 gradients)")
        linear_layers(results, SIZES[:2] if args.quick else SIZES)
    if "step" not in args.skip:
        print("[3] whole training step of newcompute train, clm-400m from scratch, batch 8 x 1024, bf16 autocast")
        training_step(
            results,
            steps=3 if args.quick else 10,
            batch=2 if args.quick else 8,
            profile=args.profile,
            variants=args.steps_variants,
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
