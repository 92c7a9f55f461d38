"""OCP Microscaling (MX) and per-tensor FP8 formats for newcompute.

Paradigms ``mxfp8``, ``mxfp8-e5m2``, ``mxfp6``, ``mxfp6-e2m3``, ``mxfp4``,
``mxint8`` and ``fp8`` (registered by :mod:`newcompute_mx.plugin`). The
quantizers are usable on their own: :mod:`newcompute_mx.reference` is the
exact pure-PyTorch definition, :mod:`newcompute_mx.ops` the fast custom ops. Each paradigm has
its config class (``Mxfp8Config``… ``FP8Config``) for ``newcompute.apply``.
"""

from newcompute_mx.config import (
    FP8Config,
    MXConfig,
    Mxfp4Config,
    Mxfp6Config,
    Mxfp6E2m3Config,
    Mxfp8Config,
    Mxfp8E5m2Config,
    MxInt8Config,
)
from newcompute_mx.formats import FORMATS, ElementFormat
from newcompute_mx.layer import QuantizedLinear
from newcompute_mx.reference import mx_fake_quantize, mx_quantize, round_to_element

__all__ = [
    "FORMATS",
    "FP8Config",
    "MXConfig",
    "ElementFormat",
    "MxInt8Config",
    "Mxfp4Config",
    "Mxfp6Config",
    "Mxfp6E2m3Config",
    "Mxfp8Config",
    "Mxfp8E5m2Config",
    "QuantizedLinear",
    "mx_fake_quantize",
    "mx_quantize",
    "round_to_element",
]
