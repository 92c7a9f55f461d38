"""Hand-computed vectors from the OCP specs, through the reference and the dispatching op.

Sources cited per case:
[MX] OCP Microscaling Formats (MX) Specification v1.0 — §5.3 element formats
     (FP6 E3M2/E2M3, FP4 E2M1, INT8 tables), §5.4.1 E8M0 scale, §6.3 conversion
     (X = 2^(floor(log2 max|V|) − emax_elem), elements rounded to nearest even,
     normal values beyond the element range clamped to its max normal, a NaN/Inf
     in the block makes X NaN).
[OFP8] OCP 8-bit Floating Point Specification (OFP8) rev 1.0 — E4M3 (bias 7,
     max 448, min subnormal 2^-9) and E5M2 (bias 15, max 57344, min subnormal 2^-16).
[RCEIL] the round-up scale X = 2^ceil(log2(fl32(amax / max_normal))) (NVIDIA
     cuBLAS block scaling, torchao RCEIL), our scale_mode="ceil".
Every expected element below is worked out in the comment next to it.
"""

from __future__ import annotations

import math

import pytest
import torch

from newcompute_mx import reference
from newcompute_mx.formats import FORMATS
from newcompute_mx.ops import mx_fake_quantize_pair

NAN = math.nan

# (format, scale_mode, block values, expected E8M0 code, expected decoded values)
CASES = [
    # [OFP8] E4M3, amax 448 → X = 2^(8−8) = 1: 448 max normal; 1.0625 tie 1|1.125 → 1; 1.1875 tie 1.125|1.25 → 1.25;
    # 17 tie 16|18 → 16; 19 tie 18|20 → 20; 2^-9 min subnormal; 2^-10 tie 0|2^-9 → 0; 3·2^-10 tie 2^-9|2^-8 → 2^-8;
    # 2^-6 min normal; 2^-6 − 2^-10 = 7.5 subnormal steps → 8 steps = 2^-6; −0 keeps its sign.
    (
        "e4m3",
        "floor",
        [448, 1.0625, 1.1875, 17, 19, 2**-9, 2**-10, 3 * 2**-10, 2**-6, 2**-6 - 2**-10, -0.0],
        127,
        [448, 1.0, 1.25, 16, 20, 2**-9, 0.0, 2**-8, 2**-6, 2**-6, -0.0],
    ),
    # [MX §6.3] amax 500 → floor(log2) = 8 → X = 1; 500, 470 (→ 480) and 460 (→ 448) all clamp to 448.
    ("e4m3", "floor", [500, 470, 460], 127, [448, 448, 448]),
    # [RCEIL] 500/448 = 1.116 → X = 2: 250 → 256 (step 16) → 512; 235 → 240 → 480; 230 → 224 → 448.
    ("e4m3", "ceil", [500, 470, 460], 128, [512, 480, 448]),
    # Outlier, floor: 1000 → X = 2^(9−8) = 2: 500 → 448 → 896; 1/2 exact → 1; 0.005 = 2.56 subnormal steps → 3 → 0.01171875.
    ("e4m3", "floor", [1000, 1, 0.01], 128, [896, 1, 3 * 2**-9 * 2]),
    # Outlier, ceil: 1000/448 = 2.23 → X = 4: 250 → 256 → 1024; 0.25 exact → 1; 0.0025 = 1.28 steps → 1 → 2^-9·4.
    ("e4m3", "ceil", [1000, 1, 0.01], 129, [1024, 1, 2**-7]),
    # All-zero block: the scale takes E8M0's smallest exponent (code 0), elements stay ±0.
    ("e4m3", "floor", [0.0, -0.0, 0.0], 0, [0.0, -0.0, 0.0]),
    # [MX §6.3] a NaN or an infinity anywhere makes the scale NaN (0xFF): the whole block decodes to NaN.
    ("e4m3", "floor", [1.0, NAN, 2.0], 255, [NAN, NAN, NAN]),
    ("e2m1", "ceil", [math.inf, 1.0], 255, [NAN, NAN]),
    # Scale clamp at 2^-127: floor(log2 2^-130) − 8 = −138 → −127, so elements are not normalised:
    # 2^-130/2^-127 = 2^-3 (normal), 2^-135/2^-127 = 2^-8 = two subnormal steps, both exact.
    ("e4m3", "floor", [2**-130, 2**-135], 0, [2**-130, 2**-135]),
    # [OFP8] E5M2, amax 61440 → X = 1: 61440 = 7.5 steps of 8192 → 65536 → clamps to 57344; 1.125 tie 1|1.25 → 1;
    # 1.375 tie 1.25|1.5 → 1.5; 2^-16 min subnormal; 2^-17 tie → 0; 3·2^-17 tie 2^-16|2^-15 → 2^-15.
    (
        "e5m2",
        "floor",
        [61440, 57344, 1.125, 1.375, 2**-16, 2**-17, 3 * 2**-17],
        127,
        [57344, 57344, 1.0, 1.5, 2**-16, 0.0, 2**-15],
    ),
    # [RCEIL] 61440/57344 → X = 2: 30720 → 32768 → 65536 (kept: the block max no longer clips);
    # 2^-16/2 = 2^-17 tie → 0 (round-up scales lose small values instead); 3·2^-18 = 0.75 steps → 1 → 2^-15.
    (
        "e5m2",
        "ceil",
        [61440, 57344, 1.125, 1.375, 2**-16, 2**-17, 3 * 2**-17],
        128,
        [65536, 57344, 1.0, 1.5, 0.0, 0.0, 2**-15],
    ),
    # [MX §5.3.2] FP6 E3M2 (max 28, min normal 0.25, min subnormal 0.0625), amax 30 → X = 2^(4−4) = 1:
    # 30 = 7.5 steps of 4 → 32 → 28; 0.09375 = 1.5 steps → 0.125; 0.03125 tie → 0; 4.5 tie → 4; 5.5 tie → 6.
    ("e3m2", "floor", [30, 28, 0.09375, 0.03125, 4.5, 5.5], 127, [28, 28, 0.125, 0.0, 4, 6]),
    # [RCEIL] 30/28 → X = 2: 15 → 16 → 32; 0.046875 = 0.75 steps → 0.0625 → 0.125; 2.25 tie → 2 → 4; 2.75 → 3 → 6.
    ("e3m2", "ceil", [30, 28, 0.09375, 0.03125, 4.5, 5.5], 128, [32, 28, 0.125, 0.0, 4, 6]),
    # [MX §5.3.2] FP6 E2M3 (max 7.5, min normal 1, min subnormal 0.125), amax 7.75 → X = 2^(2−2) = 1:
    # 7.75 = 15.5 halves → 8 → 7.5; 0.0625 tie → 0; 0.1875 tie → 0.25; 1.0625 tie → 1; 2.25 exact.
    ("e2m3", "floor", [7.75, 7.5, 0.0625, 0.1875, 1.0625, 2.25], 127, [7.5, 7.5, 0.0, 0.25, 1.0, 2.25]),
    # [RCEIL] 7.75/7.5 → X = 2: 3.875 → 4 → 8; 0.09375 → 0.125 → 0.25; 0.53125 = 4.25 steps → 0.5 → 1.
    ("e2m3", "ceil", [7.75, 7.5, 0.0625, 0.1875, 1.0625, 2.25], 128, [8, 7.5, 0.0, 0.25, 1.0, 2.25]),
    # [MX §5.3.3] FP4 E2M1, grid {0, 0.5, 1, 1.5, 2, 3, 4, 6}, amax 6 → X = 1. Ties go to the even code:
    # 5 → 4 (0b110), 0.25 → 0, 0.75 → 1 (0b010, not 0.5 = 0b001), 2.5 → 2, 3.5 → 4, 1.25 → 1.
    ("e2m1", "floor", [6, 5, 0.25, 0.75, 2.5, 3.5, 1.25], 127, [6, 4, 0.0, 1, 2, 4, 1]),
    # Outlier: 100 → X = 2^(6−2) = 16: 6.25 → 6 → 96; 1/16 and 0.3/16 fall below 0.25 → 0.
    ("e2m1", "floor", [100, 1, 0.3], 131, [96, 0.0, 0.0]),
    # [RCEIL] 100/6 = 16.7 → X = 32: 3.125 → 3 → 96.
    ("e2m1", "ceil", [100, 1, 0.3], 132, [96, 0.0, 0.0]),
    # floor clips 7 to 6; ceil (7/6 → X = 2) gives 3.5 → tie → 4 → 8.
    ("e2m1", "floor", [7], 127, [6]),
    ("e2m1", "ceil", [7], 128, [8]),
    # [MX §5.3.4] MXINT8: step 2^-6, max 127/64 (0x80 unused); amax 1.999 → X = 2^(0−0) = 1:
    # 1.999·64 = 127.9 → 128 → clamps to 127/64; 0.01·64 = 0.64 → 1/64; −1.99·64 = −127.4 → −127/64;
    # 2^-7 = half a step → 0; 1.5 steps → 2 steps.
    (
        "int8",
        "floor",
        [1.999, 1.0, 0.01, -1.99, 2**-7, 1.5 * 2**-6],
        127,
        [127 / 64, 1.0, 1 / 64, -127 / 64, 0.0, 2 / 64],
    ),
    # [RCEIL] 1.999/(127/64) → X = 2: 0.9995·64 = 63.97 → 64 → 2.0; 0.005·64 = 0.32 → 0; −0.995 → −2.0.
    (
        "int8",
        "ceil",
        [1.999, 1.0, 0.01, -1.99, 2**-7, 1.5 * 2**-6],
        128,
        [2.0, 1.0, 0.0, -2.0, 0.0, 2 / 64],
    ),
    # Largest scale: 1.5·2^127 → floor(log2) = 127 → X = 2^127 (code 254), element 1.5 exactly.
    ("int8", "floor", [1.5 * 2.0**127], 254, [1.5 * 2.0**127]),
]


def _block(values: list[float]) -> torch.Tensor:
    padded = values + [0.0] * (32 - len(values))
    return torch.tensor([padded], dtype=torch.float32)


def _assert_same(got: torch.Tensor, expected: list[float]) -> None:
    want = torch.tensor(expected, dtype=torch.float32)
    got = got.flatten()[: len(expected)].to(torch.float32)
    assert torch.equal(got.isnan(), want.isnan()), (got, want)
    finite = ~want.isnan()
    assert torch.equal(got[finite], want[finite]), (got, want)
    assert torch.equal(torch.signbit(got[finite]), torch.signbit(want[finite])), "sign of zero differs"


@pytest.mark.parametrize(("fmt", "mode", "values", "code", "expected"), CASES)
def test_reference_matches_hand_computed_block(
    fmt: str, mode: str, values: list[float], code: int, expected: list[float]
) -> None:
    quantized = reference.mx_quantize(_block(values), FORMATS[fmt], 32, -1, mode)  # type: ignore[arg-type]
    assert quantized.scale_codes.tolist() == [[code]]
    _assert_same(quantized.dequantize(), expected)


@pytest.mark.parametrize(("fmt", "mode", "values", "code", "expected"), CASES)
def test_op_quantizes_blocks_along_both_axes(
    fmt: str, mode: str, values: list[float], code: int, expected: list[float]
) -> None:
    block = _block(values)
    last, _ = mx_fake_quantize_pair(block, FORMATS[fmt], None, 32, mode, torch.float32)  # type: ignore[arg-type]
    _, rows = mx_fake_quantize_pair(block.t(), None, FORMATS[fmt], 32, mode, torch.float32)  # type: ignore[arg-type]
    _assert_same(last, expected)
    _assert_same(rows.t(), expected)


def test_blocks_are_independent_and_the_last_one_may_be_short() -> None:
    # Two E4M3 blocks of 4 and a short one of 2: each gets its own scale.
    x = torch.tensor([[448.0, 1.0625, 0.0, 0.0, 8.0, 1.0625, 0.0, 0.0, 2.0**-20, 3.0 * 2**-21]])
    quantized = reference.mx_quantize(x, FORMATS["e4m3"], block_size=4)
    # amax 448 → code 127; amax 8 → 2^(3−8) → code 122; amax 2^-20 → 2^(−20−8) → code 99.
    assert quantized.scale_codes.tolist() == [[127, 122, 99]]
    # 1.0625/2^-5 = 34 → step 4 in [32, 64) → 8.5 steps → 8 → 32·2^-5 = 1.0; the third block is exact (x/X = 256, 384).
    assert quantized.dequantize().tolist() == [[448.0, 1.0, 0.0, 0.0, 8.0, 1.0, 0.0, 0.0, 2.0**-20, 3.0 * 2**-21]]


def test_per_tensor_fp8_cast_by_hand() -> None:
    e4m3 = FORMATS["e4m3"]
    scale = reference.tensor_scale(torch.tensor(2.0), e4m3)
    assert scale.item() == 224.0  # 448 / amax 2
    x = torch.tensor([1.0, 0.3, -2.0, 0.001, float("inf"), float("nan")])
    q = reference.scaled_quantize(x, e4m3, scale)
    # 224 exact; fl32(0.3·224) = 67.2 → step 8 → 8.4 → 64; −448; 0.224 → step 2^-6 → 14.3 → 0.21875;
    # inf saturates to 448 (satfinite cast); NaN stays NaN.
    assert q[:5].tolist() == [224.0, 64.0, -448.0, 0.21875, 448.0]
    assert q[5].isnan()
    assert reference.inverse_scale(scale).item() == pytest.approx(1 / 224, rel=2**-24)
    assert reference.tensor_scale(torch.tensor(2.0), e4m3, margin=1).item() == 112.0
    assert reference.tensor_scale(torch.tensor(0.0), e4m3).item() == 1.0
    assert reference.tensor_scale(torch.tensor(float("inf")), e4m3).item() == 1.0
    assert reference.tensor_scale(torch.tensor(4.0), FORMATS["e5m2"]).item() == 14336.0
