"""The optical transformer paradigm for newcompute.

Install the distribution and ``newcompute`` finds the ``optical`` paradigm
through its entry point. The names below are for notebooks and tests:
the layers, the paradigm's config, NewComputeBench config files, and the
plain-PyTorch definition of the numerics (:mod:`newcompute_optical.reference`).
They are imported on first use (:func:`newcompute.lazy_exports`), so that
importing the entry point, as ``newcompute list-paradigms`` does, needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newcompute import lazy_exports

_EXPORTS = {
    "OpticalAttentionMatmuls": "newcompute_optical.attention",
    "OpticalConfig": "newcompute_optical.config",
    "OpticalLinear": "newcompute_optical.layer",
    "OpticalProduct": "newcompute_optical.product",
    "ProductSettings": "newcompute_optical.config",
    "load_newcomputebench_config": "newcompute_optical.config",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from newcompute_optical.attention import OpticalAttentionMatmuls
    from newcompute_optical.config import OpticalConfig, ProductSettings, load_newcomputebench_config
    from newcompute_optical.layer import OpticalLinear
    from newcompute_optical.product import OpticalProduct

__all__ = [
    "OpticalAttentionMatmuls",
    "OpticalConfig",
    "OpticalLinear",
    "OpticalProduct",
    "ProductSettings",
    "load_newcomputebench_config",
]
