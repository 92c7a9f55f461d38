"""The collectives that spread the orthogonalisation over ranks.

All of them move flat, contiguous buffers whose sizes every rank can compute
from shapes and owners alone, so no sizes are exchanged and one collective
serves a whole group of matrices. Replicated ranks all-gather the
orthogonalised stacks; sharded ranks use two all-to-alls (row shards to the
owner, row shards of the result back) and one all-gather of the per-row
vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist

from newcompute_normuon.topology import Topology, shard_rows

_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
"""torch 2.13 renamed ``all_gather_into_tensor``; older releases only have the old name."""


def all_gather_stack(mine: torch.Tensor, counts: Sequence[int], order: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Every rank's orthogonalised blocks, in slot order (ranks pad their share to the largest)."""
    width = max(counts)
    if mine.size(0) < width:
        mine = torch.cat([mine, mine.new_zeros(width - mine.size(0), *mine.shape[1:])])
    gathered = mine.new_empty(topo.world * width, *mine.shape[1:])
    _all_gather(gathered, mine.contiguous(), group=topo.group)
    return gathered.index_select(0, order)


def _row_numel(shape: torch.Size) -> int:
    return math.prod(shape[1:])


def _cat(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.cat(parts) if parts else like.new_empty(0)


def to_owners(
    sources: Sequence[torch.Tensor], shapes: Sequence[torch.Size], owners: Sequence[int], topo: Topology
) -> dict[int, torch.Tensor]:
    """Assemble, on its owner, the full tensor of every matrix from the ranks' row shards."""
    world, rank = topo.world, topo.rank
    rows = [shard_rows(shape[0], world) for shape in shapes]
    send = [sources[i].reshape(-1) for dest in range(world) for i in range(len(sources)) if owners[i] == dest]
    send_sizes = [sum(sources[i].numel() for i in range(len(sources)) if owners[i] == dest) for dest in range(world)]
    mine = [i for i in range(len(sources)) if owners[i] == rank]
    recv_sizes = [sum(rows[i][src] * _row_numel(shapes[i]) for i in mine) for src in range(world)]
    like = sources[0]
    received = like.new_empty(sum(recv_sizes))
    dist.all_to_all_single(received, _cat(send, like), recv_sizes, send_sizes, group=topo.group)
    pieces: dict[int, list[torch.Tensor]] = {i: [] for i in mine}
    offset = 0
    for src in range(world):
        for i in mine:
            numel = rows[i][src] * _row_numel(shapes[i])
            pieces[i].append(received[offset : offset + numel].view(rows[i][src], *shapes[i][1:]))
            offset += numel
    return {i: torch.cat(pieces[i]) for i in mine}


def from_owners(
    fulls: dict[int, torch.Tensor], shapes: Sequence[torch.Size], owners: Sequence[int], topo: Topology,
    like: torch.Tensor,
) -> list[torch.Tensor]:
    """Every rank's row shard of every matrix, sent by the matrices' owners."""
    world, rank = topo.world, topo.rank
    rows = [shard_rows(shape[0], world) for shape in shapes]
    starts = [[sum(r[:k]) for k in range(world)] for r in rows]
    mine = sorted(fulls)
    send = [
        fulls[i][starts[i][dest] : starts[i][dest] + rows[i][dest]].reshape(-1) for dest in range(world) for i in mine
    ]
    send_sizes = [sum(rows[i][dest] * _row_numel(shapes[i]) for i in mine) for dest in range(world)]
    recv_sizes = [
        sum(rows[i][rank] * _row_numel(shapes[i]) for i in range(len(shapes)) if owners[i] == src)
        for src in range(world)
    ]
    received = like.new_empty(sum(recv_sizes))
    dist.all_to_all_single(received, _cat(send, like), recv_sizes, send_sizes, group=topo.group)
    shards: list[torch.Tensor | None] = [None] * len(shapes)
    offset = 0
    for src in range(world):
        for i in range(len(shapes)):
            if owners[i] != src:
                continue
            numel = rows[i][rank] * _row_numel(shapes[i])
            shards[i] = received[offset : offset + numel].view(rows[i][rank], *shapes[i][1:])
            offset += numel
    return shards  # type: ignore[return-value]


def all_gather_vectors(
    mine: dict[int, torch.Tensor], lengths: Sequence[int], owners: Sequence[int], topo: Topology, like: torch.Tensor
) -> list[torch.Tensor]:
    """Every matrix's 1-D vector (computed by its owner) on every rank."""
    totals = [sum(lengths[i] for i in range(len(lengths)) if owners[i] == rank) for rank in range(topo.world)]
    width = max(totals)
    flat = like.new_zeros(width)
    if mine:
        packed = torch.cat([mine[i] for i in sorted(mine)])
        flat[: packed.numel()] = packed
    gathered = like.new_empty(topo.world * width)
    _all_gather(gathered, flat, group=topo.group)
    vectors: list[torch.Tensor | None] = [None] * len(lengths)
    for rank in range(topo.world):
        offset = rank * width
        for i in range(len(lengths)):
            if owners[i] == rank:
                vectors[i] = gathered[offset : offset + lengths[i]]
                offset += lengths[i]
    return vectors  # type: ignore[return-value]
