"""Fused optical attention: the Triton kernels (interpreted on CPU) against the two-product path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed (the gpu extra)")

CHECK = Path(__file__).with_name("optical_flash_check.py")


def test_fused_attention_matches_the_two_products_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("gradients agree") == 5, result.stdout
