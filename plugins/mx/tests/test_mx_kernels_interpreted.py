"""The Triton kernels, run on CPU by Triton's interpreter, equal the reference bit for bit.

The interpreter is chosen when a kernel is defined, so the checks run in a
child process started with ``TRITON_INTERPRET=1``; that keeps it from
changing how any other kernel in this test session runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed")

CHECKS = Path(__file__).with_name("mx_kernel_checks.py")


def test_kernels_equal_reference_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(CHECKS)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "bit for bit" in result.stdout
