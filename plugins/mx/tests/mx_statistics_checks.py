"""The MX statistics kernel against the PyTorch statistics path: the same sums, count for count.

Shared by the CPU test (run as a script under ``TRITON_INTERPRET=1``, so the
kernel executes in Triton's interpreter) and the GPU test (the real kernel
on CUDA). The PyTorch path runs on CPU tensors, where ``observe_mx`` never
takes the kernel; each check returns a list of failure descriptions, empty
when every slot and every histogram bin is equal.
"""

from __future__ import annotations

import sys
import warnings

import torch

import newcompute as nc
from mx_kernel_checks import edge_blocks, spread_operand
from newcompute_mx import statistics
from newcompute_mx.formats import FORMATS
from newcompute_mx.reference import ScaleMode
from newcompute_mx.statistics_kernel import observe_mx_blocks, observe_scaled_cast

ROLE = "wgrad_input"
"""A role in the middle of the sums' layout, so slots and bins on either side must stay untouched."""
SLOTS = (("saturated", 3), ("exp_min", 1), ("exp_max", 1))
"""The kernel's slots of a role: its three counts, then each exponent bound."""


def _on(device: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` on ``device`` with its strides kept, so a sampled view stays a strided view there."""
    if device == "cpu":
        return x
    moved = torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device=device)
    return moved.copy_(x)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal slot for slot, a NaN (an amax that saw one) equal to a NaN."""
    got = got.cpu()
    return bool(((got == want) | (got.isnan() & want.isnan())).all())


def _compare(label: str, x: torch.Tensor, axis: int, block: int, device: str, observations: int = 1) -> list[str]:
    """Every format and scale mode on ``x`` (CPU, any view): kernel on ``device`` against the PyTorch path on CPU."""
    moved = _on(device, x)
    failures = []
    for fmt in FORMATS.values():
        for mode in ("floor", "ceil"):
            scale_mode: ScaleMode = mode  # type: ignore[assignment]
            want = statistics.new_sums(None)
            got = statistics.new_sums(torch.device(device))
            for _ in range(observations):
                statistics.observe_mx(want, ROLE, x, axis, fmt, block, scale_mode)
                slots = [got.slots(f"{ROLE}_{name}", count) for name, count in SLOTS]
                observe_mx_blocks(*slots, got.histogram(f"{ROLE}_exp_hist"), moved, axis, fmt, block, mode == "ceil")
            tag = f"{label} axis {axis} {fmt.name} {mode}"
            if not torch.equal(got.sums.cpu(), want.sums):
                failures.append(f"{tag}: slots {got.sums.cpu().tolist()} != {want.sums.tolist()}")
            if not torch.equal(got.counts.cpu(), want.counts):
                differ = (got.counts.cpu() != want.counts).nonzero().flatten()[:5].tolist()
                failures.append(f"{tag}: histogram bins {differ} differ")
    return failures


def _poisoned(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Spread values with a NaN, an inf, a block of zeros and a subnormal in the first rows."""
    x = spread_operand(shape, torch.float32, seed)
    x[..., 0, 5] = float("nan")
    x[..., 1, 40] = float("-inf")
    x[..., 2, :32] = 0.0
    x[..., 3, 7] = 1e-40
    return x


def check_sampled_views(device: str) -> list[str]:
    """``statistics_rows`` samples (every 4th row or column, strided views) of batched, ragged operands."""
    failures = []
    x = _poisoned((2, 37, 70), seed=31)
    with nc.collect_statistics(row_stride=4):
        for axis in (-1, -2):
            seen = nc.statistics_rows(x, whole=axis)
            assert seen.data_ptr() == x.data_ptr() and not seen.is_contiguous()
            failures += _compare("sampled", seen, axis, 32, device)
    return failures


def check_layouts_and_dtypes(device: str) -> list[str]:
    """Whole tensors: bfloat16 and float16, a column-major operand, block sizes 16, 64 and 128 (both axes)."""
    bf16 = _poisoned((45, 96), seed=32).to(torch.bfloat16)
    half = (spread_operand((64, 33), torch.float32, seed=33) * 2.0**-10).to(torch.float16)
    transposed = _poisoned((3, 50, 64), seed=34).transpose(-1, -2)
    failures = []
    for axis in (-1, -2):
        failures += _compare("bf16", bf16, axis, 32, device, observations=2)
        failures += _compare("fp16", half, axis, 16, device)
        failures += _compare("transposed", transposed, axis, 32, device)
    wide = _poisoned((130, 200), seed=35)
    failures += _compare("block 128", wide, -1, 128, device) + _compare("block 128", wide.t(), -2, 128, device)
    failures += _compare("block 64", wide, -2, 64, device)
    return failures


def check_edge_blocks(device: str) -> list[str]:
    """Zero, NaN, inf, subnormal, huge (scale 2^127) and tiny (scale 2^-127) blocks, read in both layouts.

    A tensor of zeros and NaN holds no value at all: its exponent bounds are the "none" marker.
    """
    x = edge_blocks()
    nothing = torch.zeros(4, 64)
    nothing[1, 40] = float("nan")
    return (
        _compare("edges", x, -1, 32, device)
        + _compare("edges, columns", x.t(), -2, 32, device)
        + _compare("no value", nothing, -1, 32, device)
    )


def check_scaled_casts(device: str) -> list[str]:
    """Per-tensor casts: sampled rows and whole tensors, float32 and bfloat16, NaN and inf, two scales."""
    failures = []
    x = _poisoned((2, 37, 70), seed=36)
    x[1, 5, 3] = float("inf")
    calm = spread_operand((45, 96), torch.float32, seed=37)
    calm[9, 50] = -(2.0**40) * (1 + 2.0**-23)  # the amax, its last mantissa bit set (exact, not rounded away)
    bf16 = calm.to(torch.bfloat16)
    for scale_value in (1.0, 3.1e-5):
        scale = torch.tensor(scale_value, dtype=torch.float32)
        for tensor, label in ((x, "poisoned"), (calm, "fp32"), (bf16, "bf16"), (bf16.t(), "bf16 transposed")):
            for stride, seen_label in ((1, "whole"), (4, "every 4th row")):
                moved = _on(device, tensor)
                with nc.collect_statistics(row_stride=stride):
                    seen, moved_seen = nc.statistics_rows(tensor), nc.statistics_rows(moved)
                for fmt in (FORMATS["e4m3"], FORMATS["e5m2"]):
                    want = statistics.new_sums(None)
                    got = statistics.new_sums(torch.device(device))
                    for _ in range(2):
                        statistics.observe_scaled(want, ROLE, "input", tensor, seen, fmt, scale)
                        counted, amax = got.slots(f"{ROLE}_saturated", 3), got.slots("input_amax", 1)
                        observe_scaled_cast(counted, amax, moved, moved_seen, fmt, scale.to(device))
                    if not _same(got.sums, want.sums):
                        tag = f"scaled {label}, {seen_label}, {fmt.name}, scale {scale_value}"
                        failures.append(f"{tag}: slots {got.sums.cpu().tolist()} != {want.sums.tolist()}")
    return failures


ALL_CHECKS = (check_sampled_views, check_layouts_and_dtypes, check_edge_blocks, check_scaled_casts)


def main() -> int:
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    failures = [line for check in ALL_CHECKS for line in check("cpu")]
    print("\n".join(failures) if failures else "the statistics kernel equals the PyTorch path count for count")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
