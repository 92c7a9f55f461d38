"""Without Triton (a CPU install without the gpu extra) the plugin works, and its fused paths say what is missing."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from newcompute import MissingDependency
from newcompute_optical import ProductSettings
from newcompute_optical.attention import OpticalAttentionMatmuls
from newcompute_optical.ops import attention as fused_attention


def _forget_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import triton`` fail and the kernel modules import afresh, as on a machine without Triton."""
    monkeypatch.setitem(sys.modules, "triton", None)
    for name in [m for m in sys.modules if m.startswith("newcompute_optical.kernels")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("module", ["newcompute_optical.kernels.launch", "newcompute_optical.kernels.flash"])
def test_kernel_modules_name_the_plugin_and_the_extra(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _forget_kernels(monkeypatch)
    with pytest.raises(MissingDependency) as err:
        importlib.import_module(module)
    assert str(err.value) == (
        "newcompute-optical: the 'triton' package is not installed; the optical Triton kernels cannot run without "
        "it. Install it with: pip install 'newcompute-optical[gpu]'."
    )
    assert isinstance(err.value, ModuleNotFoundError) and err.value.name == "triton"


def test_fused_attention_without_the_kernels_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_attention, "flash", None)
    matmuls = OpticalAttentionMatmuls(ProductSettings(), "model.layers.0.self_attn")
    query, key, value = (torch.randn(1, 2, 5, 8) for _ in range(3))
    assert not fused_attention.applies(matmuls.scores.settings, query, torch.float32)
    with pytest.raises(MissingDependency, match=r"the fused optical attention kernels cannot run without it"):
        fused_attention.attention(matmuls.scores, matmuls.context, query, key, value, 0.3, True, torch.float32)
