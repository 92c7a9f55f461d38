"""Every bfloat16 value against oracles built independently of the quantizer's arithmetic.

The element oracle enumerates each format's code points from the bit-field
definitions in the specs (sign, exponent field, mantissa field, bias) and
rounds by searching that list: nearest value, ties to the even code,
saturation at the largest code. The scale oracle reads floor(log2|v|) from
the bfloat16 bit pattern with integer arithmetic. Neither uses frexp or
torch.round, which the reference quantizer relies on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from newcompute_mx import reference
from newcompute_mx.formats import FORMATS

# (exponent bits, mantissa bits, bias, reserved top codes) per [OFP8] rev 1.0 and [MX] v1.0 §5.3.
FLOAT_FIELDS = {
    "e4m3": (4, 3, 7, "S.1111.111 is NaN"),
    "e5m2": (5, 2, 15, "exponent field 11111 is Inf/NaN"),
    "e3m2": (3, 2, 3, ""),
    "e2m3": (2, 3, 1, ""),
    "e2m1": (2, 1, 1, ""),
}


def code_points(name: str) -> np.ndarray:
    """The non-negative values of a format in code order (code i ↦ values[i])."""
    if name == "int8":
        return np.arange(128, dtype=np.float64) / 64.0  # two's complement 0..127, implicit scale 2^-6
    ebits, mbits, bias, _ = FLOAT_FIELDS[name]
    values = []
    for field in range(2**ebits):
        for mantissa in range(2**mbits):
            if name == "e4m3" and field == 15 and mantissa == 7:
                continue
            if name == "e5m2" and field == 31:
                continue
            if field == 0:
                values.append(mantissa / 2**mbits * 2.0 ** (1 - bias))
            else:
                values.append((1 + mantissa / 2**mbits) * 2.0 ** (field - bias))
    return np.array(values, dtype=np.float64)


def nearest_code_value(values: np.ndarray, name: str) -> np.ndarray:
    """Round to the code points by search: nearest, ties to the even code, saturating; NaN stays NaN."""
    points = code_points(name)
    magnitude = np.abs(values)
    upper = np.clip(np.searchsorted(points, magnitude), 1, len(points) - 1)
    lower = upper - 1
    below, above = points[lower], points[upper]
    choose_upper = (magnitude - below > above - magnitude) | (
        (magnitude - below == above - magnitude) & (upper % 2 == 0)
    )
    result = np.where(choose_upper, above, below)
    result = np.where(magnitude >= points[-1], points[-1], result)
    result = np.where(np.isnan(values), np.nan, result)
    return np.copysign(result, values)


def all_bfloat16() -> torch.Tensor:
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


def bfloat16_floor_log2(values: torch.Tensor) -> np.ndarray:
    """floor(log2|v|) from the bit pattern: exponent field − 127, or for subnormals 2^-133 · fraction."""
    bits = values.view(torch.int16).numpy().astype(np.int64) & 0x7FFF
    field, fraction = bits >> 7, bits & 0x7F
    fraction_msb = np.floor(np.log2(np.maximum(fraction, 1))).astype(np.int64)  # exact for integers < 128
    return np.where(field > 0, field - 127, fraction_msb - 133)


def test_code_point_tables_match_the_format_constants() -> None:
    for name, fmt in FORMATS.items():
        points = code_points(name)
        assert points[-1] == fmt.max_normal, name
        assert points[1] == fmt.min_subnormal, name
        if fmt.min_normal is not None:
            assert points[2 ** FLOAT_FIELDS[name][1]] == fmt.min_normal, name


@pytest.mark.parametrize("name", list(FORMATS))
def test_element_rounding_of_every_bfloat16_value(name: str) -> None:
    values = all_bfloat16().to(torch.float64)
    got = reference.round_to_element(values, FORMATS[name]).numpy()
    want = nearest_code_value(values.numpy(), name)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("name", ["e4m3", "e5m2"])
def test_element_rounding_agrees_with_torch_float8_casts(name: str) -> None:
    dtype = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[name]
    values = all_bfloat16().to(torch.float32)
    in_range = values.abs() <= FORMATS[name].max_normal
    ours = reference.round_to_element(values[in_range].to(torch.float64), FORMATS[name]).to(torch.float32)
    assert torch.equal(ours, values[in_range].to(dtype).to(torch.float32))


@pytest.mark.parametrize("mode", ["floor", "ceil"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_every_bfloat16_value_as_a_one_element_block(name: str, mode: str) -> None:
    fmt = FORMATS[name]
    values = all_bfloat16()
    finite = values.isfinite() & (values != 0)
    values = values[finite]
    blocks = torch.zeros(values.numel(), 32, dtype=torch.bfloat16)
    blocks[:, 0] = values
    got = reference.mx_fake_quantize(blocks, fmt, 32, -1, mode)[:, 0]  # type: ignore[arg-type]

    if mode == "floor":
        shared = bfloat16_floor_log2(values) - fmt.max_exponent
    else:
        ratio = np.abs(values.to(torch.float32).numpy()) / np.float32(fmt.max_normal)  # float32 division
        bits = ratio.view(np.int32).astype(np.int64)
        field, fraction = bits >> 23, bits & 0x7FFFFF
        shared = np.where(field > 0, field - 127 + (fraction != 0), np.where(fraction > 2**22, -126, -127))
    shared = np.clip(shared, -127, 127)
    scale = np.ldexp(1.0, shared)
    want = nearest_code_value(values.to(torch.float64).numpy() / scale, name) * scale
    want_bf16 = torch.from_numpy(want).to(torch.float32).to(torch.bfloat16)
    assert torch.equal(got.view(torch.int16), want_bf16.view(torch.int16))
