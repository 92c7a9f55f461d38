"""``newcompute.testing.run_ranks``: a real process group, each rank's answer back, a rank's failure reported."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from newcompute.testing import backend_params, run_ranks


def _sum_of_ranks(rank: int, device: torch.device) -> dict[str, object]:
    total = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(total)
    return {"rank": rank, "world": dist.get_world_size(), "total": total, "device": device.type}


def _rank_one_fails(rank: int, device: torch.device) -> None:
    if rank == 1:
        raise ValueError("rank 1 disagrees")


@pytest.mark.parametrize("backend", backend_params(2))
def test_every_rank_answers_in_rank_order_from_one_group(backend: str) -> None:
    answers = run_ranks(_sum_of_ranks, backend, world=2)
    assert [a["rank"] for a in answers] == [0, 1]
    assert {a["world"] for a in answers} == {2}
    for answer in answers:
        assert answer["total"].device.type == "cpu" and answer["total"].item() == 3.0
    assert {a["device"] for a in answers} == {"cpu" if backend == "gloo" else "cuda"}


def test_a_failing_rank_fails_the_call_with_its_error() -> None:
    with pytest.raises(Exception, match="rank 1 disagrees"):
        run_ranks(_rank_one_fails)


def test_unknown_backends_and_missing_gpus_are_named() -> None:
    with pytest.raises(ValueError, match="backend 'mpi' is not one of gloo, nccl"):
        run_ranks(_sum_of_ranks, "mpi")
    gpus = torch.cuda.device_count()
    with pytest.raises(RuntimeError, match=f"NCCL on 64 ranks needs 64 CUDA GPUs; this machine has {gpus}"):
        run_ranks(_sum_of_ranks, "nccl", world=64)
