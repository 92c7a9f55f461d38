"""Optical transformer on one GPU: our simulation vs a bf16 baseline vs mase-triton, measured side by side.

Three parts, each printed as a table and saved to ``--json``:

1. ``linear``: one linear layer at M = 8192 tokens, K, N ∈ {1024, 2048,
   4096, 8192}, bf16 weights and activations. Training forward+backward
   (ranges updated, as in fine-tuning) and eval forward, for
   ``nn.Linear``, our ``OpticalLinear`` and mase-triton's
   ``OpticalTransformerLinear`` (min/max ranges, ``q_quantiles=None``,
   because its quantile path fails above 2²⁴ elements).
   Training is also timed as CUDA-graph replays (``do_bench_cudagraph``),
   which removes host launch overhead from both sides; mase-triton cannot
   be captured (it reads ranges on the host).
2. ``breakdown``: where our forward time goes (operand quantization, the
   GEMM with and without its fused read-out) next to cuBLAS, and a host
   profile of our eager forward.
3. ``attention``: one causal attention layer of clm-400m's shape (batch 8 ×
   1024 tokens, 15 query and 5 key heads of 64), bf16, forward+backward in
   training and forward in eval: PyTorch's SDPA, our fused optical
   attention, and our two optical products with the core's softmax between
   them (what the fused kernels replace). Time and peak memory.
4. ``step``: a whole training step (forward, backward, fused AdamW) of a
   Llama shaped like AICrossSim/clm-400m, batch 8 × 1024. Under autocast
   (fp32 master weights): bf16, our optical linears, our optical linears and
   attention, each eager and as a captured CUDA graph. With bf16 weights:
   bf16, our optical linears, mase-triton's linears (how NewComputeBench
   replaces nn.Linear; its attention wrapper is not reproduced). Median
   step time and peak memory.

Times are medians of CUDA-event timings (``triton.testing.do_bench`` for
kernels and layers) after warm-up and autotuning.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
from newcompute_optical import OpticalAttentionMatmuls, OpticalLinear, ProductSettings
from newcompute_optical.kernels.gemm import multiply
from newcompute_optical.kernels.quantize import quantize
from newcompute_optical.kernels.readout import Noise, Readout
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import newcompute as nc
from newcompute.attention import MATMULS_ATTR, newcompute_attention_forward
from newcompute.config import resolve_paradigm

TOKENS = 8192
SIZES = (1024, 2048, 4096, 8192)


def _bench(fn: Callable[[], object], grads: list[torch.Tensor] | None = None) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=60, grad_to_none=grads, return_mode="median")


def _graph_bench(fn: Callable[[], object], grads: list[torch.Tensor]) -> float:
    from triton.testing import do_bench_cudagraph

    return do_bench_cudagraph(fn, rep=40, grad_to_none=grads, return_mode="median")


def _mase_linear(linear: nn.Linear) -> nn.Module | None:
    try:
        from mase_triton.optical_compute.layers import OpticalTransformerLinear
    except ImportError:
        return None
    return OpticalTransformerLinear.from_linear(linear, q_quantiles=None)


def _time_or_error(fn: Callable[[], float]) -> float | str:
    try:
        return fn()
    except Exception as exc:  # a competitor failing on a shape is a result, not a crash
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"


def linear_sweep() -> list[dict[str, Any]]:
    rows = []
    print(f"\n## linear: M={TOKENS}, bf16; ratios to nn.Linear (train = fwd+bwd, eval = fwd, graph = train replayed)")
    print(
        f"{'K':>5} {'N':>5} | {'bf16 ms':>8} {'ours':>6} {'mase':>6} | {'eval ms':>8} {'ours':>6} {'mase':>6} "
        f"| {'graph ms':>8} {'ours':>6}"
    )
    for k in SIZES:
        for n in SIZES:
            torch.manual_seed(0)
            base = nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            x = torch.randn(TOKENS, k, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            grad = torch.randn(TOKENS, n, device="cuda", dtype=torch.bfloat16)
            layers = {"bf16": base, "ours": OpticalLinear(base, ProductSettings(), "bench"), "mase": _mase_linear(base)}
            row: dict[str, Any] = {"K": k, "N": n}
            for name, layer in layers.items():
                if layer is None:
                    continue
                params = [x, *layer.parameters()]

                def train(layer: nn.Module = layer) -> None:
                    layer(x).backward(grad)

                def infer(layer: nn.Module = layer) -> None:
                    with torch.no_grad():
                        layer(x)

                layer.train()
                row[f"{name}_train_ms"] = _time_or_error(lambda: _bench(train, params))
                if name != "mase":
                    row[f"{name}_graph_ms"] = _time_or_error(lambda: _graph_bench(train, params))
                layer.eval()
                row[f"{name}_eval_ms"] = _time_or_error(lambda: _bench(infer))
            rows.append(row)
            print(_linear_line(row), flush=True)
            del layers, base, x, grad
            torch.cuda.empty_cache()
    return rows


def _ratio(row: dict[str, Any], name: str, mode: str) -> str:
    value, base = row.get(f"{name}_{mode}_ms"), row[f"bf16_{mode}_ms"]
    if isinstance(value, float):
        return f"{value / base:6.2f}"
    return "   n/a" if value is None else "  fail"


def _linear_line(row: dict[str, Any]) -> str:
    return (
        f"{row['K']:5d} {row['N']:5d} | {row['bf16_train_ms']:8.3f} {_ratio(row, 'ours', 'train')} "
        f"{_ratio(row, 'mase', 'train')} | {row['bf16_eval_ms']:8.3f} {_ratio(row, 'ours', 'eval')} "
        f"{_ratio(row, 'mase', 'eval')} | {row['bf16_graph_ms']:8.3f} {_ratio(row, 'ours', 'graph')}"
    )


def breakdown() -> list[dict[str, Any]]:
    rows = []
    print("\n## breakdown of our forward (bf16, M=8192), ms")
    print(f"{'K=N':>5} | {'cuBLAS':>7} {'q(x)':>7} {'q(w)':>7} {'gemm':>7} {'+readout':>8} {'ours fwd':>8}")
    for size in (1024, 4096):
        x = torch.randn(1, TOKENS, size, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(1, size, size, device="cuda", dtype=torch.bfloat16) * 0.02
        value_range = torch.tensor([-3.0, 3.0], device="cuda")
        stats = torch.full((3, 2), float("-inf"), device="cuda")
        noise = Noise(torch.zeros((), dtype=torch.int64, device="cuda"), 0, 1)
        xq = quantize(x, value_range, 256, torch.bfloat16)
        wq = quantize(w, value_range, 256, torch.bfloat16)
        layer = OpticalLinear(nn.Linear(size, size, bias=False, device="cuda", dtype=torch.bfloat16),
                              ProductSettings(), "bench").train()
        row = {
            "size": size,
            "cublas_ms": _bench(lambda: torch.matmul(x, w.transpose(1, 2))),
            "quantize_x_ms": _bench(lambda: quantize(x, value_range, 256, torch.bfloat16, stats=stats)),
            "quantize_w_ms": _bench(lambda: quantize(w, value_range, 256, torch.bfloat16, stats=stats, lut_min=0.02)),
            "gemm_ms": _bench(lambda: multiply(xq, wq, torch.bfloat16)),
            "gemm_readout_ms": _bench(
                lambda: multiply(xq, wq, torch.bfloat16, stats=stats, readout=Readout(value_range, 256, noise))
            ),
            "ours_forward_ms": _bench(lambda: layer(x[0])),
        }
        rows.append(row)
        if size == 1024:
            row["host_profile"] = _host_profile(layer, x[0])
        print(
            f"{size:5d} | {row['cublas_ms']:7.3f} {row['quantize_x_ms']:7.3f} {row['quantize_w_ms']:7.3f} "
            f"{row['gemm_ms']:7.3f} {row['gemm_readout_ms']:8.3f} {row['ours_forward_ms']:8.3f}",
            flush=True,
        )
    return rows


def _host_profile(layer: nn.Module, x: torch.Tensor, calls: int = 200) -> list[str]:
    """Where the host spends an eager forward: the top functions by own time, per call."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    torch.cuda.synchronize()
    profiler.enable()
    for _ in range(calls):
        layer(x)
    profiler.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    lines = []
    for (path, line, function), (_, ncalls, own, total, _) in list(stats.stats.items()):
        lines.append((own, f"{own / calls * 1e6:7.1f} us own {total / calls * 1e6:7.1f} us total  "
                           f"{ncalls // calls:3d}x {function} ({path.rsplit('/', 2)[-1]}:{line})"))
    top = [text for _, text in sorted(lines, reverse=True)[:14]]
    print("host profile of one eager training forward (K=N=1024), top functions by own time:")
    for text in top:
        print("  " + text)
    return top


class _AttentionLayer(nn.Module):
    """One attention layer as the core calls it: ``forward(q, k, v)`` → ``(B, T, H, D)``.

    Unfused, it hands the core an explicit causal mask, which the core does
    not offer to ``attend``, so the two products run.
    """

    def __init__(self, matmuls: nn.Module | None, fused: bool) -> None:
        super().__init__()
        self.is_causal = True
        self.fused = fused
        if matmuls is not None:
            self.add_module(MATMULS_ATTR, matmuls)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, MATMULS_ATTR):
            out = nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
            return out.transpose(1, 2)
        if self.fused:
            return newcompute_attention_forward(self, query, key, value, None)[0]
        length = query.shape[-2]
        causal = torch.ones(1, 1, length, length, dtype=torch.bool, device=query.device).tril()
        return newcompute_attention_forward(self, query, key, value, causal)[0]


def attention_layer(batch: int) -> list[dict[str, Any]]:
    rows = []
    print(f"\n## one causal attention layer, clm-400m shape (batch {batch}x1024, 15/5 heads of 64), bf16")
    print(f"{'variant':<22} {'train ms':>9} {'ratio':>6} {'peak MiB':>9} {'ratio':>6} {'eval ms':>8} {'ratio':>6}")
    shape = dict(device="cuda", dtype=torch.bfloat16)
    generator = torch.Generator(device="cuda").manual_seed(0)
    query = torch.randn(batch, 1024, 15, 64, generator=generator, **shape).transpose(1, 2).requires_grad_()
    key = torch.randn(batch, 1024, 5, 64, generator=generator, **shape).transpose(1, 2).requires_grad_()
    value = torch.randn(batch, 1024, 5, 64, generator=generator, **shape).transpose(1, 2).requires_grad_()
    grad = torch.randn(batch, 1024, 15, 64, generator=generator, **shape)
    variants = {
        "SDPA (bf16)": _AttentionLayer(None, fused=False),
        "ours, fused": _AttentionLayer(OpticalAttentionMatmuls(ProductSettings(), "bench"), fused=True),
        "ours, two products": _AttentionLayer(OpticalAttentionMatmuls(ProductSettings(), "bench"), fused=False),
    }
    base: dict[str, float] = {}
    for name, layer in variants.items():
        layer.cuda().train()
        layer(query, key, value).backward(grad)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        layer(query, key, value).backward(grad)
        torch.cuda.synchronize()
        row = {
            "variant": name,
            "train_ms": _bench(lambda layer=layer: layer(query, key, value).backward(grad), [query, key, value]),
            "peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20,
        }
        layer.eval()
        with torch.no_grad():
            row["eval_ms"] = _bench(lambda layer=layer: layer(query, key, value))
        base = base or row
        rows.append(row)
        print(
            f"{name:<22} {row['train_ms']:9.3f} {row['train_ms'] / base['train_ms']:6.2f} {row['peak_mib']:9.0f} "
            f"{row['peak_mib'] / base['peak_mib']:6.2f} {row['eval_ms']:8.3f} {row['eval_ms'] / base['eval_ms']:6.2f}",
            flush=True,
        )
    return rows


def clm400m() -> LlamaConfig:
    """AICrossSim/clm-400m's shape (see docs/models.md)."""
    return LlamaConfig(
        vocab_size=49152, hidden_size=960, intermediate_size=3328, num_hidden_layers=30, num_attention_heads=15,
        num_key_value_heads=5, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=False,
    )


def _optical(model: nn.Module, attention: bool) -> None:
    table = {} if attention else {"exclude": ["lm_head", "*.self_attn"]}
    registry = nc.get_registry()
    nc.apply(model, [resolve_paradigm(registry, "optical", table)], registry=registry)


def _mase(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name != "lm_head":
            parent, _, leaf = name.rpartition(".")
            model.get_submodule(parent).add_module(leaf, _mase_linear(module))


Mode = str
"""How a step runs: ``eager``; ``graph`` (captured once as a CUDA graph, then replayed); ``compile``
(the model under ``torch.compile``, the optimizer eager)."""

STEP_VARIANTS: list[tuple[str, bool, Callable[[nn.Module], None] | None, Mode]] = [
    ("autocast: bf16", True, None, "eager"),
    ("autocast: optical linears", True, lambda m: _optical(m, attention=False), "eager"),
    ("autocast: optical linears + attention", True, lambda m: _optical(m, attention=True), "eager"),
    ("CUDA graph, autocast: bf16", True, None, "graph"),
    ("CUDA graph, autocast: optical linears", True, lambda m: _optical(m, attention=False), "graph"),
    ("CUDA graph, autocast: optical lin. + attn.", True, lambda m: _optical(m, attention=True), "graph"),
    ("compiled, autocast: bf16", True, None, "compile"),
    ("compiled, autocast: optical linears", True, lambda m: _optical(m, attention=False), "compile"),
    ("bf16 weights: bf16", False, None, "eager"),
    ("bf16 weights: optical linears", False, lambda m: _optical(m, attention=False), "eager"),
    ("bf16 weights: mase-triton linears", False, _mase, "eager"),
]


def _step_run(
    autocast: bool, transform: Callable[[nn.Module], None] | None, batch: int, steps: int, mode: Mode
) -> dict:
    graph = mode == "graph"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(clm400m())
    if not autocast:
        model.to(torch.bfloat16)
    if transform is not None:
        transform(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True, capturable=graph)
    forward = torch.compile(model) if mode == "compile" else model
    ids = torch.randint(0, 49152, (batch, 1024), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast, cache_enabled=not graph):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    run = step
    if graph:
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            step()
        run = captured.replay
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        if not graph:
            optimizer.zero_grad(set_to_none=True)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    result = {"step_ms": statistics.median(times), "peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    del model, optimizer
    gc.collect()
    torch.cuda.empty_cache()
    return result


def training_steps(batch: int, steps: int, chosen: set[str] | None) -> list[dict[str, Any]]:
    rows = []
    print(f"\n## whole training step, clm-400m shape, batch {batch}x1024, fused AdamW")
    print(f"{'variant':<42} {'ms':>8} {'ratio':>6} {'peak GB':>8} {'ratio':>6}")
    baseline: dict[str, Any] = {}
    for name, autocast, transform, mode in STEP_VARIANTS:
        if chosen is not None and name not in chosen and transform is not None:
            continue
        if transform is _mase and _mase_linear(nn.Linear(2, 2, device="cuda")) is None:
            continue
        try:
            result = _step_run(autocast, transform, batch, steps, mode)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}
            gc.collect()
            torch.cuda.empty_cache()
        if transform is None:
            baseline = result
        row = {"variant": name, **result}
        if "error" in result or "step_ms" not in baseline:
            print(f"{name:<42} failed: {result.get('error', 'its baseline failed')}", flush=True)
        else:
            row["time_ratio"] = result["step_ms"] / baseline["step_ms"]
            row["memory_ratio"] = result["peak_gb"] / baseline["peak_gb"]
            print(
                f"{name:<42} {result['step_ms']:8.1f} {row['time_ratio']:6.2f} {result['peak_gb']:8.2f} "
                f"{row['memory_ratio']:6.2f}",
                flush=True,
            )
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default="step,attention,linear,breakdown",
        help="comma-separated: step, attention, linear, breakdown",
    )
    parser.add_argument("--batch", type=int, default=8, help="sequences of 1024 tokens per training step")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per variant")
    parser.add_argument(
        "--variants", nargs="*", choices=[name for name, *_ in STEP_VARIANTS], default=None,
        help="training-step variants to time (default: all; each baseline runs whenever its group is chosen)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/optical.py needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {"device": torch.cuda.get_device_name()}
    sections = {
        "step": lambda: training_steps(args.batch, args.steps, set(args.variants) if args.variants else None),
        "attention": lambda: attention_layer(args.batch),
        "linear": linear_sweep,
        "breakdown": breakdown,
    }
    for name, measure in sections.items():
        if name in parts:
            results[name] = measure()
            if args.json:
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
