"""Data-parallel ranks that see different batches still hold identical ranges (gloo, CPU)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from newcompute_optical import OpticalLinear, ProductSettings

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank: int, step: int) -> torch.Tensor:
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(10 * step + rank)) * (1 + rank)


def _worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        seen: dict[str, object] = {}
        for per_rank in (False, True):
            torch.manual_seed(0)
            layer = OpticalLinear(nn.Linear(8, 4), ProductSettings(q_noise_per_rank=per_rank), "layer")
            layer.train()
            for step in range(3):
                layer(_batch(rank, step))
                if step == 0 and not per_rank:
                    seen["first"] = layer.optical.input_range.clone()
            layer.eval()
            seen[f"out-{per_rank}"] = layer(torch.ones(2, 8)).detach()
            if not per_rank:
                seen["ranges"] = [r.clone() for r in layer.optical.ranges()]
        results[rank] = seen
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_ranges_and_share_noise_unless_asked_not_to() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_worker, args=(_free_port(), results), nprocs=WORLD, start_method="fork")
        got = dict(results)
    both = torch.cat([_batch(0, 0), _batch(1, 0)])
    assert torch.equal(got[0]["first"], torch.stack([both.min(), both.max()]))
    for mine, theirs in zip(got[0]["ranges"], got[1]["ranges"]):
        assert torch.equal(mine, theirs)
    assert torch.equal(got[0]["out-False"], got[1]["out-False"])
    assert not torch.equal(got[0]["out-True"], got[1]["out-True"])
