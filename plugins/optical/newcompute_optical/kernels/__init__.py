"""Triton kernels of the optical product (GPU path; also runs under ``TRITON_INTERPRET=1``)."""
