"""Run one function on every rank of a real process group, for a paradigm's distributed tests.

A paradigm that keeps statistics (optical ranges, FP8 amax histories,
optimizer state spread over ranks) must hold the same values on every
data-parallel rank. Such a test is a module-level ``worker(rank, device)``
that returns what its rank ended up with; :func:`run_ranks` starts the
processes, joins them into a process group and hands back every rank's
answer in rank order, so the assertions run in the test itself. The
usual launcher variables (``RANK``, ``WORLD_SIZE``, ...) are set, so an
``accelerate.Accelerator`` made in the worker joins the same group.

One test serves CI and the GPU machine: parametrize it with
:func:`backend_params` and it runs with gloo on CPU everywhere, and with
NCCL on one GPU per rank (marked ``gpu``) where there are enough GPUs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

T = TypeVar("T")

BACKENDS = ("gloo", "nccl")


def backend_params(world: int = 2) -> list[Any]:
    """``pytest.param`` s for gloo on CPU and NCCL on ``world`` GPUs (marked ``gpu``, skipped with fewer GPUs)."""
    import pytest

    enough = torch.cuda.device_count() >= world
    return [
        pytest.param("gloo", id="gloo-cpu"),
        pytest.param(
            "nccl",
            id="nccl-cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not enough, reason=f"NCCL needs {world} CUDA GPUs")],
        ),
    ]


def run_ranks(worker: Callable[[int, torch.device], T], backend: str = "gloo", world: int = 2) -> list[T]:
    """``worker(rank, device)`` on ``world`` ranks; each rank's return value, tensors moved to CPU.

    Ranks are spawned, not forked: a forked child cannot use CUDA once the
    parent has touched it, nor change how Triton compiles kernels the parent
    already imported (``TRITON_INTERPRET``). So ``worker`` must be a
    module-level function, and an exception in it fails the call with the
    rank's traceback.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")
    if backend == "nccl" and torch.cuda.device_count() < world:
        gpus = torch.cuda.device_count()
        raise RuntimeError(f"NCCL on {world} ranks needs {world} CUDA GPUs; this machine has {gpus}")
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(
            _rank_main,
            args=(worker, backend, world, _free_port(), results),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
        return [results[rank] for rank in range(world)]


def _rank_main(
    rank: int, worker: Callable[[int, torch.device], Any], backend: str, world: int, port: int, results: Any
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        results[rank] = _to_cpu(worker(rank, device))
    finally:
        dist.destroy_process_group()


def _to_cpu(value: Any) -> Any:
    """Another process cannot unpickle a CUDA tensor it does not share memory with; a CPU copy it can."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
