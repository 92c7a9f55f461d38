"""The element formats of OCP MX v1.0 (and OCP FP8), reduced to the numbers rounding needs.

Every format here rounds the same way: keep ``mantissa_bits`` bits below the
leading one, never use an exponent below ``min_exponent`` (smaller values
land on the fixed subnormal grid of step ``2**(min_exponent - mantissa_bits)``)
and saturate at ``max_normal``. MXINT8 fits that description too: two's
complement with an implicit ``2**-6`` scale is a fixed grid of step ``2**-6``,
i.e. a float with ``min_exponent = 0`` and 6 mantissa bits whose largest value
is ``127/64`` (the spec leaves ``0x80 = -2`` unused, so the range is
symmetric). Describing all six formats by one tuple lets the reference and the
Triton kernel share a single rounding rule instead of six.
"""

from __future__ import annotations

from dataclasses import dataclass

SCALE_MIN_EXPONENT = -127
"""Smallest exponent an E8M0 scale encodes (code 0x00)."""
SCALE_MAX_EXPONENT = 127
"""Largest exponent an E8M0 scale encodes (code 0xFE); 0xFF is NaN."""
SCALE_BIAS = 127
SCALE_NAN_CODE = 0xFF
NO_QUANTIZATION = "none"


@dataclass(frozen=True)
class ElementFormat:
    """A scalar element format: what it can represent and how values round onto it."""

    name: str
    title: str
    bits: int
    mantissa_bits: int
    min_exponent: int
    max_exponent: int
    max_normal: float
    is_integer: bool = False

    @property
    def min_normal(self) -> float | None:
        """Smallest normal magnitude; an integer format has no normal/subnormal split."""
        return None if self.is_integer else 2.0**self.min_exponent

    @property
    def min_subnormal(self) -> float:
        """Smallest non-zero magnitude (the grid step below the smallest normal)."""
        return 2.0 ** (self.min_exponent - self.mantissa_bits)


FORMATS: dict[str, ElementFormat] = {
    f.name: f
    for f in (
        ElementFormat("e4m3", "FP8 E4M3", 8, 3, -6, 8, 448.0),
        ElementFormat("e5m2", "FP8 E5M2", 8, 2, -14, 15, 57344.0),
        ElementFormat("e3m2", "FP6 E3M2", 6, 2, -2, 4, 28.0),
        ElementFormat("e2m3", "FP6 E2M3", 6, 3, 0, 2, 7.5),
        ElementFormat("e2m1", "FP4 E2M1", 4, 1, 0, 2, 6.0),
        ElementFormat("int8", "INT8 (MXINT8)", 8, 6, 0, 0, 127.0 / 64.0, is_integer=True),
    )
}

FORMAT_NAMES: tuple[str, ...] = (*FORMATS, NO_QUANTIZATION)
