"""Running one NorMuon step over a :class:`~newcompute_normuon.plan.Plan`.

The per-parameter NorMuon state lives in the optimizer's ``state`` like any
torch optimizer's: ``momentum_buffer`` (the parameter's shape, dtype and
sharding) and ``second_moment`` (one float32 per logical output row, whole
on every rank).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch

from newcompute_normuon import exchange
from newcompute_normuon.coefficients import schedule
from newcompute_normuon.kernels import Kernels
from newcompute_normuon.layout import block_view
from newcompute_normuon.plan import GroupPlan, Plan, Slot
from newcompute_normuon.topology import Topology, local, shard_rows

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}

State = MutableMapping[torch.Tensor, dict[str, Any]]


def run(plan: Plan, groups: list[dict[str, Any]], state: State, kernels: Kernels) -> None:
    for group_plan in plan.groups:
        group = groups[group_plan.group]
        if plan.topology.mode == "sharded":
            _sharded_group(group_plan, group, state, kernels, plan.topology)
        else:
            _stacked_group(group_plan, group, state, kernels, plan.topology)


def _scalars(group: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """−lr and the decay factor (``None`` without decay) as 0-d device tensors.

    ``torch.full`` launches a fill kernel, so creating them never waits for the GPU.
    """
    neg_lr = torch.full((), -group["lr"], dtype=torch.float32, device=device)
    if group["lr"] * group["weight_decay"] == 0.0:
        return neg_lr, None
    return neg_lr, torch.full((), 1.0 - group["lr"] * group["weight_decay"], dtype=torch.float32, device=device)


def _row_views(moments: list[torch.Tensor], slots: tuple[Slot, ...]) -> list[torch.Tensor]:
    return [moments[s.index][s.block.start : s.block.stop] for s in slots]


def _stacked_group(plan: GroupPlan, group: dict[str, Any], state: State, kernels: Kernels, topo: Topology) -> None:
    grads = [p.grad for p in plan.params]
    momenta = [state[p]["momentum_buffer"] for p in plan.params]
    moments = [state[p]["second_moment"] for p in plan.params]
    sched = schedule(group["coefficients"], group["ns_steps"])
    specs = tuple(
        (tuple((s.index, s.block) for s in b.mine(topo.rank)), b.tall, (min(b.rows, b.cols), max(b.rows, b.cols)))
        for b in plan.buckets
    )
    stacks = kernels.momentum_and_stacks(
        grads, momenta, group["momentum"], group["nesterov"], DTYPES[group["ns_dtype"]], group["transposed"], specs
    )
    neg_lr, decay = _scalars(group, grads[0].device)
    for bucket, stack in zip(plan.buckets, stacks):
        ortho = kernels.orthogonalize(stack, sched) if stack.size(0) else stack
        if topo.mode == "replicated":
            ortho = exchange.all_gather_stack(ortho, bucket.counts, bucket.order, topo)
        views = _row_views(moments, bucket.slots)
        scales, updated = kernels.row_scales(ortho, torch.stack(views), group["beta2"], bucket.tall, bucket.shape_scale)
        torch._foreach_copy_(views, list(updated.unbind(0)))
        targets = [block_view(plan.params[s.index], group["transposed"], s.block, bucket.tall) for s in bucket.slots]
        kernels.apply_updates(targets, ortho, scales, bucket.tall, neg_lr, decay)


def _sharded_group(plan: GroupPlan, group: dict[str, Any], state: State, kernels: Kernels, topo: Topology) -> None:
    """FSDP2: gather each owned matrix whole, orthogonalise, return row shards and row factors."""
    transposed = group["transposed"]
    params = [local(p) for p in plan.params]
    grads = [local(p.grad) for p in plan.params]
    momenta = [local(state[p]["momentum_buffer"]) for p in plan.params]
    moments = [state[p]["second_moment"] for p in plan.params]
    dtype = DTYPES[group["ns_dtype"]]
    sources = kernels.momentum_and_sources(grads, momenta, group["momentum"], group["nesterov"], dtype)
    fulls = exchange.to_owners(sources, plan.shapes, plan.owners, topo)
    ortho_fulls = {i: fulls[i].new_empty(plan.shapes[i]) for i in fulls}
    vectors = {i: moments[i].new_empty(2 * moments[i].numel()) for i in fulls}
    sched = schedule(group["coefficients"], group["ns_steps"])
    for bucket in plan.buckets:
        mine = bucket.mine(topo.rank)
        if not mine:
            continue
        stack = torch.stack([block_view(fulls[s.index], transposed, s.block, bucket.tall) for s in mine])
        ortho = kernels.orthogonalize(stack, sched)
        views = _row_views(moments, mine)
        scales, updated = kernels.row_scales(ortho, torch.stack(views), group["beta2"], bucket.tall, bucket.shape_scale)
        ortho_views = [block_view(ortho_fulls[s.index], transposed, s.block, bucket.tall) for s in mine]
        torch._foreach_copy_(ortho_views, list(ortho.unbind(0)))
        factor_views = [vectors[s.index][s.block.start : s.block.stop] for s in mine]
        moment_views = [vectors[s.index][moments[s.index].numel() + s.block.start :][: s.block.rows] for s in mine]
        torch._foreach_copy_(factor_views + moment_views, list(scales.unbind(0)) + list(updated.unbind(0)))
    like = sources[0] if sources else params[0].new_empty(0, dtype=dtype)
    shards = exchange.from_owners(ortho_fulls, plan.shapes, plan.owners, topo, like)
    lengths = [2 * m.numel() for m in moments]
    gathered = exchange.all_gather_vectors(vectors, lengths, plan.owners, topo, moments[0])
    torch._foreach_copy_(moments, [vector[m.numel() :] for vector, m in zip(gathered, moments)])
    factors = [
        _local_factor(vector[: m.numel()], shape, shard, transposed, topo)
        for vector, m, shape, shard in zip(gathered, moments, plan.shapes, params)
    ]
    neg_lr, decay = _scalars(group, params[0].device)
    kernels.apply_local_updates(params, shards, factors, neg_lr, decay)


def _local_factor(
    factor: torch.Tensor, shape: torch.Size, shard: torch.Tensor, transposed: bool, topo: Topology
) -> torch.Tensor:
    """Row factors shaped to broadcast over this rank's row shard of the stored tensor."""
    if transposed:
        return factor.view(1, -1)
    start = sum(shard_rows(shape[0], topo.world)[: topo.rank])
    return factor[start : start + shard.size(0)].view(-1, *([1] * (shard.ndim - 1)))
