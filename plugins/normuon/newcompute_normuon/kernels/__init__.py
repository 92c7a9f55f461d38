"""Triton kernels of the NorMuon step (CUDA; also run under ``TRITON_INTERPRET=1``), imported only when used.

:mod:`.elementwise` fuses the momentum and update passes; :mod:`.symmetric`
computes the symmetric Newton–Schulz products. Importing either needs
Triton (the ``gpu`` extra); without it this package raises
:class:`newcompute.MissingDependency` saying so.
"""

from newcompute import missing_dependency

try:
    import triton  # noqa: F401 - checked once here, so that every kernel module may import it
except ImportError as exc:
    raise missing_dependency("triton", "newcompute-normuon", "the NorMuon Triton kernels") from exc
