"""Where the NorMuon matrices live: one process, replicated over ranks, or FSDP2-sharded.

* ``single``: no process group (or ``distributed = "off"``); every matrix is
  orthogonalised here.
* ``replicated`` (DDP and plain data parallel): every rank holds the same
  weights and, after DDP's all-reduce, the same gradients. Each rank
  orthogonalises a disjoint share of the matrices; the results are
  all-gathered and every rank applies every update, so weights and
  optimizer state stay identical on all ranks.
* ``sharded`` (FSDP2, parameters are ``DTensor`` s sharded on dim 0 of a 1-D
  mesh): each rank ships its row shard of every matrix's update source to
  the matrix's owner, the owner orthogonalises the full matrices it owns and
  computes their row factors, and sends every rank its shard of the result.
  Momentum stays sharded like the weights; the per-row second moments are
  tiny and kept whole on every rank.

Ownership is decided by a greedy longest-first split of the Newton–Schulz
cost, the same on every rank because it depends only on shapes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from newcompute import RunError

Mode = Literal["single", "replicated", "sharded"]


@dataclass(frozen=True)
class Topology:
    mode: Mode
    rank: int = 0
    world: int = 1
    group: Any = None


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return None
    return DTensor


def is_dtensor(tensor: torch.Tensor) -> bool:
    kind = _dtensor_type()
    return kind is not None and isinstance(tensor, kind)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this rank stores (the tensor itself unless it is a DTensor)."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def detect(params: Sequence[torch.Tensor], names: Sequence[str], setting: str) -> Topology:
    """The topology of the NorMuon parameters, or a RunError naming a parameter we cannot handle."""
    sharded = [is_dtensor(p) for p in params]
    if any(sharded):
        return _sharded_topology(params, names, sharded)
    if setting == "off" or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return Topology("single")
    return Topology("replicated", dist.get_rank(), dist.get_world_size(), dist.group.WORLD)


def _sharded_topology(params: Sequence[torch.Tensor], names: Sequence[str], sharded: list[bool]) -> Topology:
    from torch.distributed.tensor import Shard

    if not all(sharded):
        plain = names[sharded.index(False)]
        raise RunError(
            f"NorMuon matrix '{plain}' is a plain tensor while others are FSDP2 DTensors; shard all of them "
            "(fully_shard the whole model) or none."
        )
    mesh = params[0].device_mesh
    for param, name in zip(params, names):
        if param.device_mesh != mesh or param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
            raise RunError(
                f"NorMuon matrix '{name}' is a DTensor placed {tuple(param.placements)} on a "
                f"{param.device_mesh.ndim}-D mesh; NorMuon supports FSDP2's layout, Shard(0) on one 1-D mesh "
                "shared by all matrices."
            )
    group = mesh.get_group()
    return Topology("sharded", dist.get_rank(group), dist.get_world_size(group), group)


def assign_owners(costs: Sequence[float], world: int) -> list[int]:
    """Each item's rank: largest first onto the least-loaded rank (ties to the lowest rank)."""
    owners = [0] * len(costs)
    loads = [(0.0, rank) for rank in range(world)]
    heapq.heapify(loads)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        owners[index] = rank
        heapq.heappush(loads, (load + costs[index], rank))
    return owners


def shard_rows(rows: int, world: int) -> list[int]:
    """Rows of dim 0 on each rank under ``Shard(0)`` (``torch.chunk`` sizes: ⌈rows/world⌉, last ones short)."""
    chunk = math.ceil(rows / world)
    return [max(0, min(chunk, rows - rank * chunk)) for rank in range(world)]
