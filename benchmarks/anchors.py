"""Our step times beside the strongest bf16 baseline and beside the anchors, measured in one process on one GPU.

The figures users compare us on, each a ratio to something measured a
moment earlier in the same process:

1. ``step``: the whole ``newcompute train`` step (benchmarks/train.py's
   ``run_variant``: accelerate, bf16 autocast, fused AdamW) on clm-400m,
   batch 8 × 1024. The baseline is bf16 in its fastest mode, compiled and
   replayed as a CUDA graph; each paradigm runs with CUDA graphs and with
   compile + graphs, and its best is the ratio that counts. Eager against
   eager bf16 is printed too, and the bf16 MFU against the matmul peak
   measured here.
2. ``optical``: mase-triton's optical transformer, the paradigm's origin:
   its whole training step (its linears on a bf16 model, its only mode)
   beside the same harness's bf16 step and our optical linears
   (benchmarks/optical.py's ``_step_run``); and one linear layer,
   M = 8192, K = N = 4096, ours against ``OpticalTransformerLinear``.
3. ``mx``: one MXFP8 linear layer, M = 8192, K = N = 4096, forward and
   backward: ours against torchao's emulated MX (benchmarks/mx.py).
4. ``optimizer``: the optimizer step on the ~755M Llama parameter set:
   fused AdamW, ``torch.optim.Muon`` + AdamW, and ``NorMuonAdamW``
   (benchmarks/normuon.py).

Last, every target of the speed issue with its measured value.

    python benchmarks/anchors.py                       # all parts (about 12 minutes on an H200)
    python benchmarks/anchors.py --parts step --paradigms optical,mxfp8 --modes graphs,eager
    python benchmarks/anchors.py --parts optical,mx,optimizer
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

TARGETS = {"optical": 1.25, "mxfp8": 1.10, "normuon": 1.10, "bitflip": 1.10}
"""The speed issue's ceilings on a paradigm's step time over bf16 compiled + CUDA graphs."""
EAGER_TARGET = 1.5
MFU_TARGET = 0.5
OPTIMIZER_TARGET_MS = 40.0


def _load(name: str) -> ModuleType:
    """A sibling benchmark script as a module, so each measurement is made by one piece of code."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free() -> None:
    """Forget the last variant, dynamo's compiled frames included: its recompile limit counts per code object
    across the process, so variants compiled earlier would leave the next one running eagerly."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _attempt(label: str, measure: Any) -> Any:
    """One measurement, or ``None`` with the reason printed: one broken variant must not hide the others."""
    try:
        return measure()
    except Exception as exc:
        print(f"  {label}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", flush=True)
        _free()
        return None


def steps(paradigms: list[str], modes: list[str], batch: int, warmup: int, timed: int) -> dict[str, Any]:
    train = _load("train")
    model = train.SHAPES["clm-400m"]
    peak = train.measured_peak_tflops()
    print(f"\n## whole training step, clm-400m, batch {batch} × 1024; measured bf16 peak {peak:.0f} TFLOP/s")
    variants = ["compile+graphs", "eager"]
    variants += [f"{name}@{mode}" for name in paradigms for mode in modes]
    ms: dict[str, float] = {}
    for variant in variants:
        result = _attempt(variant, lambda: train.run_variant(model, variant, batch, 1024, warmup, timed, False))
        if result is None:
            continue
        ms[variant] = result["median_step_s"] * 1e3
        mfu = result["model_tflops"] / peak
        print(
            f"  {variant:24s} {ms[variant]:7.1f} ms  {result['tokens_per_s']:>9,.0f} tok/s  MFU {mfu:5.1%}  "
            f"first step {result['first_step_s']:5.1f} s  peak {result['peak_memory_gib']:.1f} GiB",
            flush=True,
        )
        if variant == "compile+graphs":
            ms["mfu"] = mfu
        _free()
    return {"peak_tflops": peak, "ms": ms}


def optical_anchor(batch: int, timed: int) -> dict[str, Any]:
    optical = _load("optical")
    print(f"\n## optical vs mase-triton: whole step (bf16 weights, eager), clm-400m, batch {batch} × 1024")
    found: dict[str, Any] = {}
    runs = (("bf16", None), ("ours", lambda m: optical._optical(m, attention=False)), ("mase-triton", optical._mase))
    for label, transform in runs:
        result = _attempt(label, lambda: optical._step_run(False, transform, batch, timed, "eager"))
        if result is not None:
            found[f"step_{label}"] = result["step_ms"]
            print(f"  {label:12s} {result['step_ms']:7.1f} ms  peak {result['peak_gb']:.1f} GiB", flush=True)
    optical.SIZES = (4096,)
    rows = _attempt("linear", optical.linear_sweep)
    if rows:
        found["linear"] = rows[0]
    return found


def mx_anchor() -> dict[str, Any]:
    mx = _load("mx")
    print("\n## MXFP8 linear vs torchao's emulated MX (and mase-triton's forward), M = 8192")
    results: dict[str, Any] = {}
    _attempt("linear", lambda: mx.linear_layers(results, (4096,)))
    return results.get("linear", [{}])[0]


def optimizer_anchor() -> dict[str, float]:
    normuon = _load("normuon")
    infos = normuon.llama_parameters(24, 1536, 4096, 49152, "cuda")
    print(f"\n## optimizer step, {sum(i.param.numel() for i in infos) / 1e6:.0f}M parameters")
    found: dict[str, float] = {}
    wanted = ("fused AdamW", "torch.optim.Muon + AdamW", normuon.DEFAULT)
    for name, build in normuon.optimizers(infos, "cuda", compiled=False).items():
        if name not in wanted:
            continue
        value = _attempt(name, lambda: normuon.median_ms(build(), 3, 10, "cuda"))
        if value is not None:
            found[name] = value
            print(f"  {name:48s} {value:7.2f} ms", flush=True)
        _free()
    return found


def _verdict(value: float | None, target: float, lower_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "NOT met"


def summary(found: dict[str, Any], paradigms: list[str]) -> None:
    print("\n## targets")
    step = found.get("step", {}).get("ms", {})
    best_bf16 = step.get("compile+graphs")
    for name in paradigms:
        modes = [step[v] for v in (f"{name}@graphs", f"{name}@compile+graphs") if v in step]
        ratio = min(modes) / best_bf16 if modes and best_bf16 else None
        target = TARGETS.get(name)
        if target is not None:
            shown = f"{ratio:.3f}×" if ratio else "n/a"
            verdict = _verdict(ratio, target)
            print(f"  {name} best mode / bf16 compile+graphs: {shown} (target ≤ {target}×: {verdict})")
        eager = step.get(f"{name}@eager")
        eager_ratio = eager / step["eager"] if eager and step.get("eager") else None
        shown = f"{eager_ratio:.3f}×" if eager_ratio else "n/a"
        verdict = _verdict(eager_ratio, EAGER_TARGET)
        print(f"  {name} eager / bf16 eager: {shown} (target ≤ {EAGER_TARGET}×: {verdict})")
    mfu = step.get("mfu")
    if mfu is not None:
        print(f"  bf16 compile+graphs MFU: {mfu:.1%} (target ≥ 50%: {_verdict(mfu, MFU_TARGET, False)})")
    optical = found.get("optical", {})
    if "step_ours" in optical and "step_mase-triton" in optical:
        print(f"  mase-triton whole step / ours (bf16 weights, eager): "
              f"{optical['step_mase-triton'] / optical['step_ours']:.2f}×")
    mx = found.get("mx", {})
    if mx.get("torchao_fb") and mx.get("ours_fb"):
        print(f"  torchao emulated MX linear / ours (fwd+bwd): {mx['torchao_fb'] / mx['ours_fb']:.2f}×")
    optimizer = found.get("optimizer", {})
    ours = next((v for k, v in optimizer.items() if k.startswith("NorMuonAdamW")), None)
    muon = optimizer.get("torch.optim.Muon + AdamW")
    if ours is not None:
        against_muon = f"; torch.optim.Muon + AdamW / ours {muon / ours:.2f}×" if muon else ""
        verdict = _verdict(ours, OPTIMIZER_TARGET_MS)
        print(f"  NorMuonAdamW step: {ours:.1f} ms (target ≤ {OPTIMIZER_TARGET_MS:.0f} ms: {verdict}){against_muon}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="step,optical,mx,optimizer", help="comma-separated parts, see above")
    parser.add_argument("--paradigms", default="optical,mxfp8,normuon,bitflip")
    parser.add_argument("--modes", default="graphs,compile+graphs,eager", help="the modes each paradigm runs in")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/anchors.py needs a CUDA GPU (the anchors are GPU kernels)", file=sys.stderr)
        return 2
    paradigms = [p for p in args.paradigms.split(",") if p]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    parts = {
        "step": lambda: steps(paradigms, args.modes.split(","), args.batch, args.warmup, args.steps),
        "optical": lambda: optical_anchor(args.batch, args.steps),
        "mx": mx_anchor,
        "optimizer": optimizer_anchor,
    }
    found: dict[str, Any] = {}
    for name in args.parts.split(","):
        found[name] = parts[name]()
        _free()
        if args.json:
            args.json.write_text(json.dumps(found, indent=1, default=str))
    summary(found, paradigms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
