"""Run the Triton kernels under ``TRITON_INTERPRET=1`` (on CPU) against the reference.

Executed in a subprocess by test_optical_interpreter.py, because Triton
decides at import whether kernels are interpreted. fp32 only: the
interpreter truncates fp32→bf16 conversions (the GPU rounds to nearest even)
and does not emulate bf16 dot products, so bf16 is covered by the GPU tests.
Prints one line per case and exits non-zero on the first mismatch.
"""

from __future__ import annotations

import os
import sys

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from newcompute_optical import reference  # noqa: E402
from newcompute_optical.kernels import launch, numerics  # noqa: E402
from newcompute_optical.ops.product import product as product_op  # noqa: E402

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _dither_probe(out_ptr, calls_ptr, rows, cols, key0, key1, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    offs_r = tl.arange(0, BLOCK_R)
    offs_c = tl.arange(0, BLOCK_C)
    call, k0, k1 = numerics.noise_inputs(calls_ptr, key0, key1)
    first_row = tl.zeros([], dtype=tl.int64) + (1 << 33)
    noise = numerics.dither(first_row, BLOCK_R, 0, tl.cdiv(cols, 4), call, k0, k1, BLOCK_C)
    mask = (offs_r[:, None] < rows) & (offs_c[None, :] < cols)
    tl.store(out_ptr + offs_r[:, None] * cols + offs_c[None, :], noise, mask=mask)


def check_dither() -> None:
    calls = torch.tensor((1 << 32) + 7, dtype=torch.int64)
    out = torch.empty(5, 30)
    _dither_probe[(1,)](out, calls, 5, 30, 123, 2_000_000_000, BLOCK_R=8, BLOCK_C=32)
    # rows from 2³³ on: the counter's high word and the carry out of the low word are exercised
    first_row = 1 << 33
    expected = reference.dither(5, 30, 123, 2_000_000_000, calls, first_row=first_row)
    assert torch.equal(out, expected), "dither differs"
    print("dither: identical")


def _state(seed: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ranges = [torch.sort(torch.randn(2, generator=generator) * s).values for s in (2.0, 0.3, 3.0)]
    return ranges, torch.full((3, 2), float("-inf")), torch.tensor(41, dtype=torch.int64)


def check_product(case: str, batch: int, transposed_b: bool, bias: bool, lut: float | None,
                  quantiles: list[float] | None, training: bool) -> None:
    generator = torch.Generator().manual_seed(batch)
    a = torch.randn(batch, 37, 70, generator=generator)
    b = torch.randn(batch, 45, 70, generator=generator) * 0.2
    if transposed_b:
        b = b.transpose(1, 2).contiguous().transpose(1, 2)
    bias_t = torch.randn(45, generator=generator) if bias else None
    results = []
    for implementation in (launch.product, product_op):
        ranges, stats, calls = _state(batch)
        out = implementation(a, b, bias_t, *ranges, stats, calls, 64, lut, quantiles, 0.1, 5, 77, training,
                             torch.float32)
        results.append((*out, *ranges, stats, calls))
    names = ["out", "aq", "bq", "input_range", "weight_range", "output_range", "stats", "calls"]
    for name, mine, theirs in zip(names, *results):
        if name in PRODUCT_DEPENDENT:
            same = _close_product(name, mine, theirs, results[1][5])
        else:
            same = torch.equal(mine, theirs)
        if not same:
            print(f"{case}: {name} differs: max {(mine.float() - theirs.float()).abs().max()}")
            sys.exit(1)
    print(f"{case}: identical")


PRODUCT_DEPENDENT = ("out", "output_range")
"""The interpreter accumulates the product in another order than torch.matmul; these may differ by rounding."""


def _close_product(name: str, mine: torch.Tensor, theirs: torch.Tensor, out_range: torch.Tensor) -> bool:
    if name == "output_range":
        return torch.allclose(mine, theirs, rtol=1e-6, atol=0.0)
    level = (out_range[1] - out_range[0]) / 63
    differs = mine != theirs
    return bool((mine - theirs).abs().max() <= level * 1.001) and differs.float().mean().item() < 0.01


if __name__ == "__main__":
    check_dither()
    check_product("linear, training, LUT, bias", 1, False, True, 0.02, None, True)
    check_product("batched, eval, transposed B", 3, True, False, None, None, False)
    check_product("quantile ranges, training", 2, False, True, 0.02, [0.01, 0.99], True)
