"""Bit-exact comparisons of the Triton kernels with the reference quantizer.

Shared by the CPU test (run as a script under ``TRITON_INTERPRET=1``, so the
kernels execute in Triton's interpreter) and the GPU tests (real kernels on
CUDA). Each check returns a list of failure descriptions; empty means equal
bit for bit (NaN compared as NaN).
"""

from __future__ import annotations

import sys
import warnings

import torch

from newcompute_mx import reference
from newcompute_mx.formats import FORMATS
from newcompute_mx.kernels import PAIR_TILE, mx_pair, mx_pairs, scaled_cast

INTERPRETER_TILE = (128, 128)
"""Larger tiles under the interpreter: fewer programs, and a second tile shape exercised."""


def differences(got: torch.Tensor, want: torch.Tensor, label: str) -> list[str]:
    """Empty if equal bit for bit, else one line naming the first mismatches."""
    got, want = got.cpu(), want.cpu()
    if got.shape != want.shape or got.dtype != want.dtype:
        return [f"{label}: got {got.dtype}{tuple(got.shape)}, want {want.dtype}{tuple(want.shape)}"]
    width = {2: torch.int16, 4: torch.int32}[got.element_size()]
    same = (got.view(width) == want.view(width)) | (got.isnan() & want.isnan())
    if bool(same.all()):
        return []
    where = (~same).nonzero()[:3].tolist()
    pairs = [(got[tuple(i)].item(), want[tuple(i)].item()) for i in where]
    return [f"{label}: {int((~same).sum())} differ, first (got, want): {pairs}"]


def spread_operand(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random values whose rows and columns span ~60 binades, so many different scales occur."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    row_exp = torch.randint(-30, 30, (*shape[:-1], 1), generator=generator)
    col_exp = torch.randint(-3, 4, (shape[-1],), generator=generator)
    return (values * torch.exp2((row_exp + col_exp).float())).to(dtype)


def _compare_pair(
    x: torch.Tensor, device: str, block: int, out_dtype: torch.dtype, label: str, tile: tuple[int, int]
) -> list[str]:
    failures: list[str] = []
    for fmt in FORMATS.values():
        for mode in ("floor", "ceil"):
            last, rows = mx_pair(x.to(device), fmt, fmt, block, mode == "ceil", out_dtype, tile=tile)
            want_last = reference.mx_fake_quantize(x, fmt, block, -1, mode, out_dtype)
            want_rows = reference.mx_fake_quantize(x, fmt, block, -2, mode, out_dtype)
            tag = f"{label} {fmt.name} {mode}"
            failures += differences(last, want_last, f"{tag} last") + differences(rows, want_rows, f"{tag} rows")
    return failures


def check_random(device: str, tile: tuple[int, int] = PAIR_TILE) -> list[str]:
    """Every format and scale mode, both axes, fp32/bf16 inputs and outputs, ragged and batched shapes."""
    failures: list[str] = []
    cases = [((96, 160), 32), ((3, 70, 45), 32), ((2, 64, 64), 16), ((40, 256), 128)]
    dtypes = [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)]
    for index, (shape, block) in enumerate(cases):
        for dtype, out_dtype in dtypes[index % 2 :]:
            x = spread_operand(shape, dtype, seed=index)
            failures += _compare_pair(x, device, block, out_dtype, f"{shape}/{dtype}->{out_dtype}", tile)
    return failures


def check_two_jobs(device: str, tile: tuple[int, int] = PAIR_TILE) -> list[str]:
    """Two tensors in one launch: other shapes, dtypes, strides and formats, some outputs skipped; three jobs take two launches."""
    failures: list[str] = []
    weight = spread_operand((70, 96), torch.float32, seed=21)
    batched = spread_operand((2, 40, 64), torch.bfloat16, seed=22).transpose(-1, -2)
    ragged = spread_operand((33, 45), torch.bfloat16, seed=23)
    e4m3, e5m2, e2m1 = FORMATS["e4m3"], FORMATS["e5m2"], FORMATS["e2m1"]
    jobs = [
        (batched.to(device), e5m2, e4m3),
        (weight.to(device), None, e2m1),
        (ragged.to(device), e4m3, None),
    ]
    for mode in ("floor", "ceil"):
        outputs = mx_pairs(jobs, 32, mode == "ceil", torch.bfloat16, tile=tile)
        for index, (job, source, (last, rows)) in enumerate(zip(jobs, (batched, weight, ragged), outputs)):
            for got, fmt, axis in ((last, job[1], -1), (rows, job[2], -2)):
                label = f"job {index} axis {axis} {mode}"
                if fmt is None:
                    failures += [] if got is None else [f"{label}: an output that was not asked for"]
                else:
                    want = reference.mx_fake_quantize(source, fmt, 32, axis, mode, torch.bfloat16)  # type: ignore[arg-type]
                    failures += differences(got, want, label)
    return failures


def edge_blocks() -> torch.Tensor:
    """One 32-element block per row, each a corner case of the scale or element rules."""
    rows = torch.zeros(10, 32)
    rows[1, 5] = float("nan")
    rows[1, 6] = 3.0
    rows[2, 0] = float("-inf")
    rows[3, :4] = torch.tensor([1e-40, -3e-41, 2e-45, 0.0])
    rows[4, :3] = torch.tensor([3.0e38, -1.0, 2.0e37])
    rows[5, :3] = torch.tensor([2.0**-120, 2.0**-126, -(2.0**-125)])
    rows[6] = torch.linspace(-7.75, 7.75, 32)
    rows[7, :2] = torch.tensor([-0.0, 0.0])
    rows[8, :3] = torch.tensor([1000.0, 1.0, 0.01])
    rows[9] = torch.arange(32) * 2.0**-12
    return rows


def check_edges(device: str, tile: tuple[int, int] = PAIR_TILE) -> list[str]:
    """Zero, NaN, inf, subnormal, huge (scale 2^127) and tiny (scale 2^-127) blocks, read in both layouts."""
    x = edge_blocks()
    return _compare_pair(x, device, 32, torch.float32, "edges", tile) + _compare_pair(
        x.t(), device, 32, torch.float32, "edges, column-major input", tile
    )


def all_bfloat16() -> torch.Tensor:
    """Every bfloat16 bit pattern, as a (2048, 32) tensor: each row is one block."""
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).reshape(2048, 32)


def check_exhaustive_bfloat16(device: str, tile: tuple[int, int] = PAIR_TILE) -> list[str]:
    """All 65536 bfloat16 values through the kernel, as blocks along both axes."""
    return _compare_pair(all_bfloat16(), device, 32, torch.bfloat16, "all bf16", tile)


def check_scaled_cast(device: str, tile: tuple[int, int] = PAIR_TILE) -> list[str]:
    """Per-tensor FP8 casts of random, overflowing, NaN and inf values."""
    failures: list[str] = []
    x = spread_operand((33, 77), torch.float32, seed=7)
    x[0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0])
    for fmt in (FORMATS["e4m3"], FORMATS["e5m2"]):
        for scale_value in (1.0, 3.1e-5, 7.0e4, 2.0**-100):
            scale = torch.tensor(scale_value, dtype=torch.float32)
            for dtype in (torch.float32, torch.bfloat16):
                got = scaled_cast(x.to(dtype).to(device), fmt, scale.to(device), torch.float32)
                want = reference.scaled_quantize(x.to(dtype), fmt, scale)
                failures += differences(got, want, f"scaled {fmt.name} scale={scale_value} {dtype}")
    return failures


ALL_CHECKS = (check_random, check_two_jobs, check_edges, check_exhaustive_bfloat16, check_scaled_cast)


def main() -> int:
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    failures = [line for check in ALL_CHECKS for line in check("cpu", INTERPRETER_TILE)]
    print("\n".join(failures) if failures else "all kernel checks equal the reference bit for bit")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
