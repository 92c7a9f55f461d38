"""Running one NorMuon step over a :class:`~newcompute_normuon.plan.Plan`.

The per-parameter NorMuon state lives in the optimizer's ``state`` like any
torch optimizer's: ``momentum_buffer`` (the parameter's shape, dtype and
sharding) and ``second_moment`` (one float32 per logical output row, whole
on every rank).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch

from newcompute_normuon import exchange
from newcompute_normuon.coefficients import Schedule, schedule
from newcompute_normuon.lanes import Lanes
from newcompute_normuon.layout import block_view
from newcompute_normuon.ops import StepOps
from newcompute_normuon.plan import Bucket, GroupPlan, Plan, Slot
from newcompute_normuon.topology import Topology, local, shard_rows

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}

State = MutableMapping[torch.Tensor, dict[str, Any]]


def run(
    plan: Plan, groups: list[dict[str, Any]], state: State, ops: StepOps, lanes: Lanes, beside: Callable[[], None]
) -> None:
    """One step of every NorMuon group of ``plan``; ``beside`` (the AdamW groups) runs on the side lane."""
    if plan.topology.mode == "sharded":
        beside()
        for group_plan in plan.groups:
            _sharded_group(group_plan, groups[group_plan.group], state, ops, plan.topology)
        return
    _stacked(plan, groups, state, ops, lanes, beside)


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


def _flattens_in_place(tensor: torch.Tensor) -> bool:
    """Whether :func:`~newcompute_normuon.layout.logical` is a view (``flatten(1)`` of a 3-D+ tensor may copy)."""
    if tensor.ndim <= 2:
        return True
    return all(tensor.stride(d) == tensor.stride(d + 1) * tensor.size(d + 1) for d in range(1, tensor.ndim - 1))


@dataclass(eq=False)
class _GroupStep:
    """One NorMuon group's tensors and settings for this step."""

    group: dict[str, Any]
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    momenta: list[torch.Tensor]
    moments: list[torch.Tensor]
    fused: bool
    schedule: Schedule
    neg_lr: torch.Tensor
    decay: torch.Tensor | None
    unstacked: list[int] = field(default_factory=list)
    """Parameters none of whose blocks this rank stacks: their momenta are advanced on their own."""


@dataclass
class _BucketStep:
    """One bucket's stack for this step."""

    owner: _GroupStep
    bucket: Bucket
    mine: tuple[Slot, ...]
    stack: torch.Tensor
    advance: list[int] = field(default_factory=list)
    """Torch path: parameters whose whole momentum is advanced before this stack is built (first use)."""
    ready: torch.cuda.Event | None = None
    inverse: torch.Tensor | None = None
    """Symmetric kernels: the Newton–Schulz normalisation the first iteration applies (one per matrix)."""


def _group_step(plan: GroupPlan, group: dict[str, Any], state: State, ops: StepOps) -> _GroupStep:
    grads = [p.grad for p in plan.params]
    momenta = [state[p]["momentum_buffer"] for p in plan.params]
    device = grads[0].device
    fused = ops.fuses(device) and all(
        g.dtype == m.dtype and all(_flattens_in_place(t) for t in (p, g, m))
        for p, g, m in zip(plan.params, grads, momenta)
    )
    return _GroupStep(
        group,
        plan.params,
        grads,
        momenta,
        [state[p]["second_moment"] for p in plan.params],
        fused,
        schedule(group["coefficients"], group["ns_steps"]),
        *_scalars(group, device),
    )


def _bucket_steps(plan: Plan, groups: list[dict[str, Any]], state: State, ops: StepOps) -> list[_BucketStep]:
    """Every bucket of every group, its stack allocated, in the order the step processes them.

    The first bucket's preparation and the last bucket's update have nothing
    to overlap with, so the smallest bucket goes first and the second
    smallest last. Sizes count every slot, not this rank's, so that all
    ranks issue their collectives in the same order.
    """
    works = []
    for group_plan in plan.groups:
        owner = _group_step(group_plan, groups[group_plan.group], state, ops)
        for bucket in group_plan.buckets:
            mine = bucket.mine(plan.topology.rank)
            shape = (len(mine), min(bucket.rows, bucket.cols), max(bucket.rows, bucket.cols))
            stack = owner.grads[0].new_empty(shape, dtype=DTYPES[owner.group["ns_dtype"]])
            works.append(_BucketStep(owner, bucket, mine, stack))
    works.sort(key=lambda w: len(w.bucket.slots) * w.bucket.rows * w.bucket.cols)
    if len(works) > 2:
        works = [works[0], *works[2:], works[1]]
    seen: dict[_GroupStep, set[int]] = {work.owner: set() for work in works}
    for work in works:
        first_uses = list(dict.fromkeys(s.index for s in work.mine if s.index not in seen[work.owner]))
        seen[work.owner].update(first_uses)
        work.advance = [] if work.owner.fused else first_uses
    for owner, stacked in seen.items():
        owner.unstacked = [i for i in range(len(owner.params)) if i not in stacked]
    return works


def _advance(owner: _GroupStep, indices: list[int], ops: StepOps) -> None:
    if indices:
        ops.advance_momenta(
            [owner.momenta[i] for i in indices], [owner.grads[i] for i in indices], owner.group["momentum"]
        )


def _prepare(work: _BucketStep, ops: StepOps) -> None:
    """Momentum, Nesterov blend and cast into the stack, then the Newton–Schulz scaling: all memory-bound."""
    owner, group = work.owner, work.owner.group
    _advance(owner, work.advance, ops)
    if not work.mine:
        return
    tall, transposed = work.bucket.tall, group["transposed"]
    grads = [block_view(owner.grads[s.index], transposed, s.block, tall) for s in work.mine]
    momenta = [block_view(owner.momenta[s.index], transposed, s.block, tall) for s in work.mine]
    if owner.fused:
        ops.fused_kernels.momentum_into_stack(grads, momenta, work.stack, group["momentum"], group["nesterov"])
    else:
        ops.stack_sources(grads, momenta, work.stack, group["momentum"], group["nesterov"])
    work.inverse = ops.normalize_(work.stack, owner.schedule)


def _finish(work: _BucketStep, ortho: torch.Tensor, ops: StepOps) -> None:
    """Row statistics, second-moment update and the weight update of one bucket: memory-bound."""
    owner, bucket, group = work.owner, work.bucket, work.owner.group
    views = _row_views(owner.moments, bucket.slots)
    scales, updated = ops.row_scales(ortho, torch.stack(views), group["beta2"], bucket.tall, bucket.shape_scale)
    torch._foreach_copy_(views, list(updated.unbind(0)))
    targets = [block_view(owner.params[s.index], group["transposed"], s.block, bucket.tall) for s in bucket.slots]
    update = ops.fused_kernels.apply_update if owner.fused else ops.apply_updates
    update(targets, ortho, scales, bucket.tall, owner.neg_lr, owner.decay)


def _stacked(
    plan: Plan, groups: list[dict[str, Any]], state: State, ops: StepOps, lanes: Lanes, beside: Callable[[], None]
) -> None:
    """Single and replicated modes, pipelined over the two lanes.

    The main lane builds the first stack (nothing can overlap it) and runs
    every bucket's iterations; the side lane builds every other stack while
    main iterates on the first, and each bucket's statistics and update run
    on the side lane while main iterates on the next bucket. Without
    streams this is the plain sequential step.
    """
    works = _bucket_steps(plan, groups, state, ops)
    lanes.fork()
    with lanes.main():
        _prepare(works[0], ops)
        pending = _orthogonalize(works[0], plan.topology, ops, lanes)
    with lanes.side():
        beside()
        for owner in dict.fromkeys(work.owner for work in works):
            _advance(owner, owner.unstacked, ops)
        for work in works[1:]:
            _prepare(work, ops)
            work.ready = lanes.mark()
    with lanes.main():
        for work, following in zip(works, [*works[1:], None]):
            ortho, done = pending
            if following is not None:
                lanes.wait(following.ready)
                pending = _orthogonalize(following, plan.topology, ops, lanes)
            with lanes.side():
                lanes.wait(done)
                lanes.lend(ortho)
                _finish(work, ortho, ops)
    lanes.join()


def _orthogonalize(
    work: _BucketStep, topo: Topology, ops: StepOps, lanes: Lanes
) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """Queue the bucket's Newton–Schulz iterations (and all-gather) on main; the result and its event."""
    ortho = ops.iterate(work.stack, work.owner.schedule, work.inverse) if work.mine else work.stack
    if topo.mode == "replicated":
        ortho = exchange.all_gather_stack(ortho, work.bucket.counts, work.bucket.order, topo)
    return ortho, lanes.mark()


def _sharded_group(plan: GroupPlan, group: dict[str, Any], state: State, ops: StepOps, topo: Topology) -> None:
    """FSDP2: gather each owned matrix whole, orthogonalise, return row shards and row factors."""
    transposed = group["transposed"]
    params = [local(p) for p in plan.params]
    grads = [local(p.grad) for p in plan.params]
    momenta = [local(state[p]["momentum_buffer"]) for p in plan.params]
    moments = [state[p]["second_moment"] for p in plan.params]
    dtype = DTYPES[group["ns_dtype"]]
    sources = ops.momentum_and_sources(grads, momenta, group["momentum"], group["nesterov"], dtype)
    fulls = exchange.to_owners(sources, plan.shapes, plan.owners, topo)
    ortho_fulls = {i: fulls[i].new_empty(plan.shapes[i]) for i in fulls}
    vectors = {i: moments[i].new_empty(2 * moments[i].numel()) for i in fulls}
    sched = schedule(group["coefficients"], group["ns_steps"])
    for bucket in plan.buckets:
        mine = bucket.mine(topo.rank)
        if not mine:
            continue
        stack = torch.stack([block_view(fulls[s.index], transposed, s.block, bucket.tall) for s in mine])
        ortho = ops.iterate(stack, sched, ops.normalize_(stack, sched))
        views = _row_views(moments, mine)
        scales, updated = ops.row_scales(ortho, torch.stack(views), group["beta2"], bucket.tall, bucket.shape_scale)
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
    ops.apply_local_updates(params, shards, factors, neg_lr, decay)


def _local_factor(
    factor: torch.Tensor, shape: torch.Size, shard: torch.Tensor, transposed: bool, topo: Topology
) -> torch.Tensor:
    """Row factors shaped to broadcast over this rank's row shard of the stored tensor."""
    if transposed:
        return factor.view(1, -1)
    start = sum(shard_rows(shape[0], topo.world)[: topo.rank])
    return factor[start : start + shard.size(0)].view(-1, *([1] * (shard.ndim - 1)))
