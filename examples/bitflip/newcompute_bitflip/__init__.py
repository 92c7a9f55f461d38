"""Random bit flips in linear layers: NewComputeBench's bitflip paradigm as a newcompute plugin.

Written only against newcompute's public API, as any third-party plugin
would be. The numerics are defined once in :mod:`newcompute_bitflip.reference`
(pure PyTorch, any device); :mod:`newcompute_bitflip.kernels` holds a Triton
kernel that produces the same bits on CUDA.
"""

__version__ = "0.1.0"
