"""The step's static structure: which blocks are stacked together and who orthogonalises them.

Built once per set of parameters that have gradients (and rebuilt when that
set changes), so the hot path only walks a handful of buckets. A bucket is
every block of one parameter group with one logical shape: a single batched
Newton–Schulz call. Within a bucket, slots are ordered by owner so that each
rank's share is one contiguous slice of the stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from newcompute_normuon.layout import Block, logical_shape, resolve_blocks
from newcompute_normuon.topology import Topology, assign_owners


@dataclass(frozen=True)
class Slot:
    index: int
    """Position of the parameter in its group plan."""
    block: Block


@dataclass
class Bucket:
    rows: int
    cols: int
    slots: tuple[Slot, ...]
    counts: tuple[int, ...]
    order: torch.Tensor | None = None
    """Replicated mode: where each slot sits in the all-gathered, padded stack."""

    @property
    def tall(self) -> bool:
        return self.rows > self.cols

    @property
    def shape_scale(self) -> float:
        return math.sqrt(max(1.0, self.rows / self.cols))

    def mine(self, rank: int) -> tuple[Slot, ...]:
        start = sum(self.counts[:rank])
        return self.slots[start : start + self.counts[rank]]


@dataclass
class GroupPlan:
    group: int
    params: list[torch.Tensor]
    shapes: list[torch.Size]
    owners: list[int]
    buckets: list[Bucket] = field(default_factory=list)


@dataclass
class Plan:
    topology: Topology
    groups: list[GroupPlan]


def newton_schulz_cost(rows: int, cols: int, steps: int) -> float:
    """Floating-point operations of ``steps`` iterations on one block (Gram matrix on the short side)."""
    short, long = min(rows, cols), max(rows, cols)
    return steps * (4 * short * short * long + 2 * short**3)


def _blocks(group: dict[str, Any], param: torch.Tensor, position: int) -> tuple[Block, ...]:
    names = group.get("param_names") or []
    name = names[position] if position < len(names) else f"parameter {position} of group '{group.get('name', '')}'"
    out_features, _ = logical_shape(param.shape, group["transposed"])
    return resolve_blocks(group["splits"], out_features, name)


def build_plan(groups: list[dict[str, Any]], members: list[list[int]], topology: Topology) -> Plan:
    """``members[g]`` are the positions (in ``groups[g]['params']``) of parameters that have gradients."""
    plans, costs, blocks = [], [], []
    for gi, positions in enumerate(members):
        if not positions:
            continue
        group = groups[gi]
        params = [group["params"][p] for p in positions]
        group_blocks = [_blocks(group, group["params"][p], p) for p in positions]
        blocks.append(group_blocks)
        for param, param_blocks in zip(params, group_blocks):
            _, cols = logical_shape(param.shape, group["transposed"])
            costs.append(sum(newton_schulz_cost(b.rows, cols, group["ns_steps"]) for b in param_blocks))
        plans.append(GroupPlan(gi, params, [p.shape for p in params], []))
    owners = assign_owners(costs, topology.world)
    start = 0
    for plan, group_blocks in zip(plans, blocks):
        plan.owners = owners[start : start + len(plan.params)]
        start += len(plan.params)
        plan.buckets = _buckets(groups[plan.group], plan, group_blocks, topology)
    return Plan(topology, plans)


def _buckets(group: dict[str, Any], plan: GroupPlan, blocks: list[tuple[Block, ...]], topo: Topology) -> list[Bucket]:
    by_shape: dict[tuple[int, int], list[Slot]] = {}
    for index, (param, param_blocks) in enumerate(zip(plan.params, blocks)):
        _, cols = logical_shape(param.shape, group["transposed"])
        for block in param_blocks:
            by_shape.setdefault((block.rows, cols), []).append(Slot(index, block))
    buckets = []
    for (rows, cols), slots in by_shape.items():
        slots.sort(key=lambda s: (plan.owners[s.index], s.index, s.block.start))
        counts = tuple(sum(plan.owners[s.index] == rank for s in slots) for rank in range(topo.world))
        bucket = Bucket(rows, cols, tuple(slots), counts)
        if topo.mode == "replicated":
            width = max(counts)
            positions = [rank * width + k for rank in range(topo.world) for k in range(counts[rank])]
            bucket.order = torch.tensor(positions, dtype=torch.long, device=plan.params[0].device)
        buckets.append(bucket)
    return buckets
