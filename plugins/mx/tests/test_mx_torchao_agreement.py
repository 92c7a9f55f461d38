"""Bit-exact agreement with an independent implementation: torchao.prototype.mx_formats.

torchao is a test-only dependency; these tests skip when it cannot be imported.
torchao supports FP8 E4M3/E5M2, FP6 E3M2/E2M3 and FP4 E2M1 elements (not MXINT8),
with FLOOR (OCP) and RCEIL scales, which are our "floor" and "ceil". Inputs
are random with block maxima spread over ~80 binades but kept above 2^-100:
torchao deliberately deviates for blocks whose scale would be 2^-127 (it
divides by 2^-126 there, and RCEIL leaves such blocks unscaled), which
docs/mx.md lists.
"""

from __future__ import annotations

import pytest
import torch

from newcompute_mx import reference
from newcompute_mx.formats import FORMATS

mx_tensor = pytest.importorskip(
    "torchao.prototype.mx_formats.mx_tensor", reason="torchao (test-only dependency) is not importable"
)
mx_config = pytest.importorskip("torchao.prototype.mx_formats.config")
mx_constants = pytest.importorskip("torchao.prototype.mx_formats.constants")

TORCHAO_ELEMENT = {
    "e4m3": torch.float8_e4m3fn,
    "e5m2": torch.float8_e5m2,
    "e3m2": mx_constants.DTYPE_FP6_E3M2,
    "e2m3": mx_constants.DTYPE_FP6_E2M3,
    "e2m1": torch.float4_e2m1fn_x2,
}
TORCHAO_MODE = {"floor": mx_config.ScaleCalculationMode.FLOOR, "ceil": mx_config.ScaleCalculationMode.RCEIL}


def random_blocks(dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(64, 512, generator=generator)
    block_exponents = torch.randint(-40, 40, (64, 16, 1), generator=generator).float()
    values = (values.reshape(64, 16, 32) * torch.exp2(block_exponents)).reshape(64, 512)
    values[0, :32] = 0.0
    values[1, 32:64] = torch.linspace(-6.0, 6.0, 32)
    return values.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["floor", "ceil"])
@pytest.mark.parametrize("name", list(TORCHAO_ELEMENT))
def test_scales_and_values_equal_torchao(name: str, mode: str, dtype: torch.dtype) -> None:
    x = random_blocks(dtype, seed=sum(map(ord, f"{name}/{mode}/{dtype}")))
    scale, data = mx_tensor.to_mx(x, TORCHAO_ELEMENT[name], 32, TORCHAO_MODE[mode])
    theirs = mx_tensor.to_dtype(data, scale, TORCHAO_ELEMENT[name], 32, torch.float32)

    ours = reference.mx_quantize(x, FORMATS[name], 32, -1, mode)  # type: ignore[arg-type]
    assert torch.equal(ours.scale_codes, scale.view(torch.uint8).reshape(ours.scale_codes.shape))
    assert torch.equal(ours.dequantize(torch.float32).view(torch.int32), theirs.view(torch.int32))


@pytest.mark.parametrize("name", list(TORCHAO_ELEMENT))
def test_nan_blocks_equal_torchao(name: str) -> None:
    x = torch.ones(2, 32)
    x[1, 3] = float("nan")
    scale, data = mx_tensor.to_mx(x, TORCHAO_ELEMENT[name], 32, TORCHAO_MODE["floor"])
    theirs = mx_tensor.to_dtype(data, scale, TORCHAO_ELEMENT[name], 32, torch.float32)
    ours = reference.mx_fake_quantize(x, FORMATS[name], 32, -1, "floor", torch.float32)
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert torch.equal(ours[0], theirs[0])
