"""Optimizer step time on a Llama-shaped parameter set: fused AdamW, torch.optim.Muon + AdamW, NorMuonAdamW.

Default shapes are the issue's ~755M set (24 layers, hidden 1536, MLP 4096,
vocab 49152, tied head): 168 hidden matrices trained by the matrix
optimizer, the embedding and norms by AdamW. Gradients are fixed random
tensors, so only the optimizer step is timed: CUDA events around each step,
after warm-up steps (which also compile and autotune), median of the rest.
All variants run in one process on the same parameters, and ratios are
printed against fused AdamW and torch.optim.Muon.

NorMuonAdamW runs in several configurations, so one run shows what each
lever gives: the ``torch._foreach`` elementwise passes on one stream (the
previous default), the fused Triton elementwise kernels alone, the second
CUDA stream alone, and both (the default on CUDA). ``--compiled`` adds the
``torch.compile`` variants (about a minute each to compile). On CPU only
the CPU-capable variants run.

It also times the Newton–Schulz work alone (to compare with its FLOP floor)
and the share of it that the busiest rank would do with the orthogonalisation
spread over N ranks (compute only; communication is not simulated).

    python benchmarks/normuon.py                 # the 755M set on CUDA (under 4 minutes on an H100)
    python benchmarks/normuon.py --layers 2 --hidden 128 --mlp 256 --vocab 512 --device cpu   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from newcompute import OptimizerSettings, ParamInfo, ParamKind
from newcompute_normuon import NorMuonAdamW, NorMuonConfig, build_groups, orthogonalize, schedule
from newcompute_normuon.plan import newton_schulz_cost
from newcompute_normuon.topology import assign_owners

PEAK_TFLOPS_FOR_FLOOR = 700.0
DEFAULT = "NorMuonAdamW fused kernels, Triton NS (default)"
CPU_DEFAULT = "NorMuonAdamW foreach, cuBLAS"
NAME_WIDTH = 54


def llama_parameters(layers: int, hidden: int, mlp: int, vocab: int, device: str) -> list[ParamInfo]:
    """Parameters named and classified as the core would classify a Llama with these sizes."""

    def info(name: str, shape: tuple[int, ...], kind: ParamKind) -> ParamInfo:
        param = torch.nn.Parameter(torch.randn(*shape, device=device) * 0.02)
        param.grad = torch.randn_like(param) * 1e-3
        return ParamInfo(name, param, kind, "Linear" if kind == ParamKind.HIDDEN_MATRIX else "Other", "Linear")

    infos = [info("model.embed_tokens.weight", (vocab, hidden), ParamKind.EMBEDDING)]
    for i in range(layers):
        prefix = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            infos.append(info(f"{prefix}.self_attn.{proj}.weight", (hidden, hidden), ParamKind.HIDDEN_MATRIX))
        infos.append(info(f"{prefix}.mlp.gate_proj.weight", (mlp, hidden), ParamKind.HIDDEN_MATRIX))
        infos.append(info(f"{prefix}.mlp.up_proj.weight", (mlp, hidden), ParamKind.HIDDEN_MATRIX))
        infos.append(info(f"{prefix}.mlp.down_proj.weight", (hidden, mlp), ParamKind.HIDDEN_MATRIX))
        infos.append(info(f"{prefix}.input_layernorm.weight", (hidden,), ParamKind.NORM))
        infos.append(info(f"{prefix}.post_attention_layernorm.weight", (hidden,), ParamKind.NORM))
    infos.append(info("model.norm.weight", (hidden,), ParamKind.NORM))
    return infos


def median_ms(step: Callable[[], object], warmup: int, iters: int, device: str) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            step()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def optimizers(
    infos: list[ParamInfo], device: str, compiled: bool
) -> dict[str, Callable[[], Callable[[], object]]]:
    """Builders (so each optimizer's state exists only while it is timed) of the step functions."""
    params = [i.param for i in infos]
    matrices = [i.param for i in infos if i.kind == ParamKind.HIDDEN_MATRIX]
    rest = [i.param for i in infos if i.kind != ParamKind.HIDDEN_MATRIX]
    fused = device == "cuda"
    settings = OptimizerSettings(lr=3e-4, weight_decay=0.0)

    def adamw() -> Callable[[], object]:
        return torch.optim.AdamW(params, lr=3e-4, fused=fused).step

    def muon() -> Callable[[], object]:
        matrix_opt = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0)
        other_opt = torch.optim.AdamW(rest, lr=3e-4, fused=fused)
        return lambda: (matrix_opt.step(), other_opt.step())

    def ours(ns_kernel: str, elementwise: str, overlap: bool, compile: bool = False) -> Callable[[], Callable[[], object]]:
        def build() -> Callable[[], object]:
            groups = build_groups(NorMuonConfig(), infos, settings)
            optimizer = NorMuonAdamW(
                groups, compile=compile, ns_kernel=ns_kernel, elementwise=elementwise, overlap=overlap
            )
            return optimizer.step

        return build

    variants = {
        "fused AdamW": adamw,
        "torch.optim.Muon + AdamW": muon,
        "NorMuonAdamW foreach, cuBLAS": ours("torch", "torch", overlap=False),
    }
    if device == "cuda":
        variants |= {
            "NorMuonAdamW foreach, Triton NS (old default)": ours("triton", "torch", overlap=False),
            "NorMuonAdamW two streams, Triton NS": ours("triton", "torch", overlap=True),
            "NorMuonAdamW fused + two streams, Triton NS": ours("triton", "triton", overlap=True),
            "NorMuonAdamW fused, cuBLAS": ours("torch", "triton", overlap=False),
            DEFAULT: ours("triton", "auto", overlap=False),
        }
        if compiled:
            variants["NorMuonAdamW compiled, Triton NS"] = ours("triton", "torch", overlap=False, compile=True)
            variants["NorMuonAdamW compiled, cuBLAS"] = ours("torch", "torch", overlap=False, compile=True)
    return variants


def stacks_by_shape(infos: list[ParamInfo]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for i in infos:
        if i.kind == ParamKind.HIDDEN_MATRIX:
            rows, cols = i.param.shape
            key = (min(rows, cols), max(rows, cols))
            counts[key] = counts.get(key, 0) + 1
    return counts


def newton_schulz_only(infos: list[ParamInfo], device: str, warmup: int, iters: int, world: int) -> dict[str, float]:
    """Time the batched orthogonalisation alone, for all matrices and for the busiest rank's share.

    Returns each kernel's time for all matrices (ms).
    """
    plan = schedule("quintic", 5)
    counts = stacks_by_shape(infos)
    flops = sum(n * newton_schulz_cost(r, c, 5) for (r, c), n in counts.items())
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    stacks = {shape: torch.randn(n, *shape, device=device, dtype=dtype) for shape, n in counts.items()}
    kinds: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"cuBLAS bmm": lambda s: orthogonalize(s, plan)}
    if device == "cuda":
        from newcompute_normuon.kernels.symmetric import orthogonalize_symmetric

        kinds["Triton symmetric"] = lambda s: orthogonalize_symmetric(s, plan)
    costs = [newton_schulz_cost(r, c, 5) for (r, c), n in counts.items() for _ in range(n)]
    owners = assign_owners(costs, world)
    busiest = max(range(world), key=lambda rank: sum(c for c, o in zip(costs, owners) if o == rank))
    shapes = [shape for shape, n in counts.items() for _ in range(n)]
    share = {shape: sum(1 for s, o in zip(shapes, owners) if s == shape and o == busiest) for shape in counts}
    print(f"\nNewton–Schulz alone, 5 quintic steps in {dtype}: {flops / 1e12:.1f} TFLOP per step "
          f"(floor at {PEAK_TFLOPS_FOR_FLOOR:.0f} TFLOP/s: {flops / PEAK_TFLOPS_FOR_FLOOR / 1e9:.1f} ms)")
    totals = {}
    for name, fn in kinds.items():
        total = median_ms(lambda fn=fn: [fn(s) for s in stacks.values()], warmup, iters, device)
        part = median_ms(lambda fn=fn: [fn(stacks[k][: share[k]]) for k in stacks if share[k]], warmup, iters, device)
        print(f"  {name:18s} all matrices {total:8.2f} ms ({flops / total / 1e9:6.0f} TFLOP/s)   "
              f"busiest of {world} ranks {part:8.2f} ms ({total / part:4.1f}x less)", flush=True)
        totals[name] = total
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--mlp", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--world", type=int, default=8, help="ranks for the per-rank Newton–Schulz share")
    parser.add_argument(
        "--compiled", action="store_true", help="also time the torch.compile variants (about a minute each to compile)"
    )
    args = parser.parse_args()

    infos = llama_parameters(args.layers, args.hidden, args.mlp, args.vocab, args.device)
    total = sum(i.param.numel() for i in infos)
    matrices = sum(i.param.numel() for i in infos if i.kind == ParamKind.HIDDEN_MATRIX)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{device_name}, torch {torch.__version__}: {total / 1e6:.1f}M parameters "
          f"({matrices / 1e6:.1f}M in {sum(i.kind == ParamKind.HIDDEN_MATRIX for i in infos)} matrices)")
    newton_schulz = newton_schulz_only(infos, args.device, args.warmup, args.iters, args.world)
    print()
    results = {}
    for name, build in optimizers(infos, args.device, args.compiled).items():
        began = time.perf_counter()
        try:
            step = build()
            results[name] = median_ms(step, args.warmup, args.iters, args.device)
        except Exception as exc:  # one broken variant must not hide the others' numbers
            print(f"  {name:{NAME_WIDTH}s} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        finally:
            step = None
            if args.device == "cuda":
                torch.cuda.empty_cache()
        print(f"  {name:{NAME_WIDTH}s} {results[name]:8.2f} ms/step   "
              f"(warm-up + timing {time.perf_counter() - began:5.1f} s)", flush=True)
    adamw, muon = results["fused AdamW"], results["torch.optim.Muon + AdamW"]
    print(f"\n  {'step time':{NAME_WIDTH}s}       ms   vs fused AdamW   vs torch Muon")
    for name, ms in results.items():
        print(f"  {name:{NAME_WIDTH}s} {ms:8.2f}   {ms / adamw:13.2f}x   {ms / muon:12.2f}x")
    kernel, default = ("Triton symmetric", DEFAULT) if args.device == "cuda" else ("cuBLAS bmm", CPU_DEFAULT)
    if default in results and kernel in newton_schulz:
        print(f"\n{default}: {results[default]:.2f} ms, of which beyond Newton–Schulz alone ({kernel}): "
              f"{results[default] - newton_schulz[kernel]:.2f} ms")


if __name__ == "__main__":
    main()
