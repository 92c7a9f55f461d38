"""The Triton symmetric-product kernel, run by Triton's CPU interpreter (float32).

The interpreter must be switched on before Triton is imported, so the check
runs in a fresh interpreter process. Odd sizes exercise the masks and the
mirrored stores of off-diagonal tiles. (The interpreter's bfloat16 ``dot`` is
not faithful, so bfloat16 is checked on the GPU.)
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = """
import torch
from newcompute_normuon import orthogonalize, schedule
from newcompute_normuon.kernels.symmetric import orthogonalize_symmetric, symmetric_product

blocks = {"BLOCK": 16, "BLOCK_K": 16}
torch.manual_seed(0)
y = torch.randn(2, 40, 72)
gram = symmetric_product(y, blocks=blocks)
assert torch.allclose(gram, y @ y.mT, atol=1e-4), "gram"
a = gram / 100
poly = symmetric_product(a, alpha=2.0, addend=a, beta=-0.5, diagonal=3.0, blocks=blocks)
assert torch.allclose(poly, 2 * a @ a - 0.5 * a + 3.0 * torch.eye(40), atol=1e-4), "polynomial"
x = torch.randn(3, 24, 56)
for name in ("quintic", "polar_express"):
    plan = schedule(name, 5)
    assert torch.allclose(orthogonalize_symmetric(x, plan, blocks=blocks), orthogonalize(x, plan), atol=1e-5), name
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_symmetric_kernel_in_the_triton_interpreter() -> None:
    env = os.environ | {"TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
