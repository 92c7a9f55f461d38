"""Where the sign, exponent and fraction bits sit in each floating-point format we flip."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from newcompute import ConfigError


@dataclass(frozen=True)
class BitLayout:
    """The bit fields of one format; ``sign_exponent`` includes the sign bit, as upstream flips them together."""

    width: int
    sign_exponent: int
    fraction: int
    int_dtype: torch.dtype


LAYOUTS: dict[torch.dtype, BitLayout] = {
    torch.float32: BitLayout(32, 0xFF80_0000, 0x007F_FFFF, torch.int32),
    torch.bfloat16: BitLayout(16, 0xFF80, 0x007F, torch.int16),
    torch.float16: BitLayout(16, 0xFC00, 0x03FF, torch.int16),
}


def layout_of(dtype: torch.dtype) -> BitLayout:
    try:
        return LAYOUTS[dtype]
    except KeyError:
        valid = ", ".join(str(d).removeprefix("torch.") for d in LAYOUTS)
        raise ConfigError(f"bitflip cannot flip bits of {dtype} tensors; supported formats: {valid}.") from None
