"""OCP Microscaling (MX) and per-tensor FP8 formats for newcompute.

Paradigms ``mxfp8``, ``mxfp8-e5m2``, ``mxfp6``, ``mxfp6-e2m3``, ``mxfp4``,
``mxint8`` and ``fp8`` (registered by :mod:`newcompute_mx.plugin`). The
quantizers are usable on their own: :mod:`newcompute_mx.reference` is the
exact pure-PyTorch definition, :mod:`newcompute_mx.ops` the fast custom ops. Each paradigm has
its config class (``Mxfp8Config``… ``FP8Config``) for ``newcompute.apply``.
The names below are imported on first use (:func:`newcompute.lazy_exports`),
so that importing the entry point, as ``newcompute list-paradigms`` does, needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newcompute import lazy_exports

_EXPORTS = {
    "FORMATS": "newcompute_mx.formats",
    "FP8Config": "newcompute_mx.config",
    "MXConfig": "newcompute_mx.config",
    "ElementFormat": "newcompute_mx.formats",
    "MxInt8Config": "newcompute_mx.config",
    "Mxfp4Config": "newcompute_mx.config",
    "Mxfp6Config": "newcompute_mx.config",
    "Mxfp6E2m3Config": "newcompute_mx.config",
    "Mxfp8Config": "newcompute_mx.config",
    "Mxfp8E5m2Config": "newcompute_mx.config",
    "QuantizedLinear": "newcompute_mx.layer",
    "mx_fake_quantize": "newcompute_mx.reference",
    "mx_quantize": "newcompute_mx.reference",
    "round_to_element": "newcompute_mx.reference",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
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
