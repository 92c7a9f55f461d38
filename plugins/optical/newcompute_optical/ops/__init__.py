"""The optical operations as PyTorch sees them: autograd functions and custom ops over the kernels and the reference.

:mod:`.product` is one optical product (a linear layer, or Q·Kᵀ / P·V);
:mod:`.attention` is the whole attention fused, taken on CUDA when it applies.
"""
