"""Triton kernels of the NorMuon step (CUDA; also run under ``TRITON_INTERPRET=1``), imported only when used.

:mod:`.elementwise` fuses the momentum and update passes; :mod:`.symmetric`
computes the symmetric Newton–Schulz products.
"""
