"""The Triton kernels, run by Triton's CPU interpreter, reproduce the reference (bit for bit where order allows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed (the gpu extra)")

CHECK = Path(__file__).with_name("optical_interpreter_check.py")
TELEMETRY_CHECK = Path(__file__).with_name("optical_telemetry_check.py")


def test_triton_kernels_match_the_reference_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("identical") == 4, result.stdout


def test_telemetry_kernels_match_the_reference_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, str(TELEMETRY_CHECK)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("identical counts") == 3, result.stdout
