"""Benchmark the bitflip example plugin against bf16 and mase-triton's random bit flip, on one GPU.

Everything is measured in one process and printed as ratios to the bf16
baseline measured right next to it (triton.testing.do_bench: CUDA events,
warm-up, median):

1. the flip kernel alone on an 8192 × 4096 bf16 tensor, NewComputeBench's
   recipe (p = 2⁻¹⁶ for exponent and fraction bits, zero-out threshold 30),
   against a plain copy and mase-triton's ``random_bitflip_fn``;
2. one linear layer, forward + backward, M = 8192 tokens, K = N in
   {1024, 2048, 4096}, bf16: ``nn.Linear``, ours (``BitFlipLinear`` with the
   recipe) and mase-triton's ``RandomBitFlipLinear`` with the same settings.

Usage: ``python benchmarks/bitflip.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import triton.testing
from torch import nn

from newcompute_bitflip.config import BitFlipConfig, halves
from newcompute_bitflip.kernels import flip_bits_triton
from newcompute_bitflip.layer import BitFlipLinear
from newcompute_bitflip.reference import FlipSpec

TOKENS = 8192
SIZES = (1024, 2048, 4096)
RECIPE = BitFlipConfig()


def bench(fn: Callable[[], Any]) -> float:
    """Median milliseconds of ``fn``."""
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def kernel_alone() -> None:
    from mase_triton.random_bitflip.core import random_bitflip_fn

    x = torch.randn(TOKENS, 4096, device="cuda", dtype=torch.bfloat16)
    call = torch.zeros((), dtype=torch.int64, device="cuda")
    n = halves(RECIPE.x_p_exp)
    spec = FlipSpec(n, n, 0, 1, RECIPE.x_zero_out_t, (0, 1))
    copy_ms = bench(lambda: x.clone())
    ours_ms = bench(lambda: flip_bits_triton(x, call, spec))
    theirs_ms = bench(lambda: random_bitflip_fn(x, n, n, 0, 0, RECIPE.x_zero_out_t))
    moved = x.numel() * (2 * x.element_size() + 1)
    print(f"flip kernel, {tuple(x.shape)} bf16, p=2^-{n}, threshold {RECIPE.x_zero_out_t}:")
    print(f"  copy            {copy_ms:.3f} ms")
    print(f"  ours            {ours_ms:.3f} ms  {ours_ms / copy_ms:.2f}x copy  {moved / ours_ms / 1e6:.0f} GB/s")
    print(f"  mase-triton     {theirs_ms:.3f} ms  {theirs_ms / copy_ms:.2f}x copy")
    print(f"  ours / mase-triton: {ours_ms / theirs_ms:.2f}")


def fwd_bwd(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer(x).backward(grad)

    return step


def linear_layers() -> None:
    from mase_triton.random_bitflip.layers import RandomBitFlipLinear

    print(f"linear forward + backward, M={TOKENS}, bf16, recipe p=2^-{halves(RECIPE.x_p_exp)}:")
    print(f"  {'K=N':>6}  {'bf16 ms':>8}  {'ours ms':>8}  {'ours/bf16':>9}  {'mase ms':>8}  {'mase/bf16':>9}")
    for size in SIZES:
        torch.manual_seed(0)
        base = nn.Linear(size, size, device="cuda", dtype=torch.bfloat16)
        nn.init.normal_(base.weight, std=size**-0.5)
        ours = BitFlipLinear(base, RECIPE, "bench")
        theirs = RandomBitFlipLinear.from_linear(
            base, RECIPE.x_p_exp, RECIPE.x_p_frac, RECIPE.x_zero_out_t,
            RECIPE.w_p_exp, RECIPE.w_p_frac, RECIPE.w_zero_out_t,
        )
        x = torch.randn(TOKENS, size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(TOKENS, size, device="cuda", dtype=torch.bfloat16)
        times = [bench(fwd_bwd(layer, x, grad)) for layer in (base, ours, theirs)]
        print(
            f"  {size:>6}  {times[0]:>8.3f}  {times[1]:>8.3f}  {times[1] / times[0]:>9.2f}  "
            f"{times[2]:>8.3f}  {times[2] / times[0]:>9.2f}"
        )


def main() -> None:
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    kernel_alone()
    linear_layers()


if __name__ == "__main__":
    main()
