"""Data-parallel ranks that see different batches still hold identical ranges (gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from newcompute.testing import backend_params, run_ranks
from newcompute_optical import OpticalLinear, ProductSettings


def _batch(rank: int, step: int) -> torch.Tensor:
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(10 * step + rank)) * (1 + rank)


def _ranges_after_three_steps(rank: int, device: torch.device) -> dict[str, object]:
    seen: dict[str, object] = {}
    for per_rank in (False, True):
        torch.manual_seed(0)
        layer = OpticalLinear(nn.Linear(8, 4), ProductSettings(q_noise_per_rank=per_rank), "layer").to(device)
        layer.train()
        for step in range(3):
            layer(_batch(rank, step).to(device))
            if step == 0 and not per_rank:
                seen["first"] = layer.optical.input_range.clone()
        layer.eval()
        seen[f"out-{per_rank}"] = layer(torch.ones(2, 8, device=device))
        if not per_rank:
            seen["ranges"] = [r.clone() for r in layer.optical.ranges()]
    return seen


@pytest.mark.parametrize("backend", backend_params())
def test_ranks_agree_on_ranges_and_share_noise_unless_asked_not_to(backend: str) -> None:
    first, second = run_ranks(_ranges_after_three_steps, backend)
    both = torch.cat([_batch(0, 0), _batch(1, 0)])
    assert torch.equal(first["first"], torch.stack([both.min(), both.max()]))
    for mine, theirs in zip(first["ranges"], second["ranges"], strict=True):
        assert torch.equal(mine, theirs)
    assert torch.equal(first["out-False"], second["out-False"])
    assert not torch.equal(first["out-True"], second["out-True"])
