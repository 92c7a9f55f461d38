"""The optical transformer paradigm for newcompute.

Install the distribution and ``newcompute`` finds the ``optical`` paradigm
through its entry point. The names below are for notebooks and tests:
the layers, the paradigm's config, NewComputeBench config files, and the
plain-PyTorch definition of the numerics (:mod:`newcompute_optical.reference`).
"""

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
