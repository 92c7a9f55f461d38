"""Triton kernels of the optical product (GPU path; also runs under ``TRITON_INTERPRET=1``).

Importing any of them needs Triton (the ``gpu`` extra); without it this
package raises :class:`newcompute.MissingDependency` saying so, which the
callers that have a reference path catch.
"""

from newcompute import missing_dependency

try:
    import triton  # noqa: F401 - checked once here, so that every kernel module may import it
except ImportError as exc:
    raise missing_dependency("triton", "newcompute-optical", "the optical Triton kernels") from exc
