"""``NorMuonAdamW``: one ``torch.optim.Optimizer`` for a whole model.

Like modded-nanogpt's ``NorMuonAndAdam``, one object trains both kinds of
parameters, configured per parameter; unlike it, the configuration is
ordinary parameter groups, so ``state_dict``/``load_state_dict``, LR
schedulers (torch, HF, accelerate) and ``param_groups`` edits work as with
any torch optimizer. A group's ``optimizer`` key is ``"normuon"`` or
``"adamw"``; the other keys are listed in :data:`DEFAULTS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

import torch

from newcompute import ConfigError, StatisticSums, collecting_statistics

from newcompute_normuon import engine, statistics
from newcompute_normuon.adamw import adamw_group
from newcompute_normuon.coefficients import schedule
from newcompute_normuon.lanes import Lanes
from newcompute_normuon.layout import logical_shape, resolve_blocks
from newcompute_normuon.ops import ELEMENTWISE, StepOps
from newcompute_normuon.plan import Plan, build_plan
from newcompute_normuon.topology import detect, local

DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "betas": (0.9, 0.95),
    "eps": 1e-8,
    "momentum": 0.95,
    "beta2": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "coefficients": "quintic",
    "ns_dtype": "bfloat16",
    "transposed": False,
    "splits": None,
    "name": "",
}


def _param_name(group: dict[str, Any], position: int) -> str:
    names = group.get("param_names") or []
    return names[position] if position < len(names) else f"parameter {position} of group '{group['name']}'"


def _validate(group: dict[str, Any]) -> None:
    """Reject a group the step could not run, naming the key or parameter and what is valid."""
    label = f"parameter group '{group['name']}'" if group["name"] else "a parameter group"
    if group["optimizer"] not in ("normuon", "adamw"):
        raise ConfigError(f"{label}: optimizer {group['optimizer']!r} is not 'normuon' or 'adamw'.")
    if not group["lr"] >= 0.0 or not group["weight_decay"] >= 0.0:
        raise ConfigError(
            f"{label}: lr and weight_decay must be non-negative, got {group['lr']}, {group['weight_decay']}."
        )
    if group["optimizer"] == "adamw":
        if not all(0.0 <= b < 1.0 for b in group["betas"]):
            raise ConfigError(f"{label}: betas must lie in [0, 1), got {list(group['betas'])}.")
        return
    if not (0.0 <= group["momentum"] < 1.0 and 0.0 <= group["beta2"] < 1.0):
        raise ConfigError(f"{label}: momentum and beta2 must lie in [0, 1), got {group['momentum']}, {group['beta2']}.")
    if group["ns_dtype"] not in engine.DTYPES:
        raise ConfigError(f"{label}: ns_dtype {group['ns_dtype']!r} is not one of {sorted(engine.DTYPES)}.")
    try:
        schedule(group["coefficients"], group["ns_steps"])
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    for position, param in enumerate(group["params"]):
        name = _param_name(group, position)
        if param.ndim < 2 or (group["transposed"] and param.ndim != 2):
            raise ConfigError(
                f"{label}: '{name}' has shape {tuple(param.shape)}; NorMuon trains tensors with 2 or more "
                "dimensions (transposed ones exactly 2). Put it in an 'adamw' group."
            )
        if param.ndim > 2 and not local(param).flatten(1)._is_view():
            raise ConfigError(
                f"{label}: '{name}' (shape {tuple(param.shape)}, strides {local(param).stride()}) cannot be seen as "
                "an out × in matrix without a copy (a channels-last tensor, for one), so its updates would be "
                "lost. Make it contiguous or put it in an 'adamw' group."
            )
        out_features, _ = logical_shape(param.shape, group["transposed"])
        resolve_blocks(group["splits"], out_features, name)


class NorMuonAdamW(torch.optim.Optimizer):
    """NorMuon for hidden matrices and AdamW for the rest, in one optimizer.

    ``compile`` wraps the step's torch functions in ``torch.compile``
    (measured slower than eager on an H100); ``ns_kernel='triton'``
    computes the symmetric Newton–Schulz products on half the tiles (CUDA
    only, see :mod:`newcompute_normuon.kernels.symmetric`). ``elementwise`` picks
    the momentum and update passes: fused Triton kernels ('triton', see
    :mod:`newcompute_normuon.kernels.elementwise`), ``torch._foreach`` ops ('torch'), or
    'auto' (Triton on CUDA unless ``compile``). ``overlap`` runs the
    memory-bound work (AdamW included) on one CUDA stream beside the
    Newton–Schulz iterations on another (see :mod:`newcompute_normuon.lanes`);
    it has no effect on CPU or under FSDP2. ``distributed='auto'`` spreads
    the Newton–Schulz work over an initialised process group (see
    :mod:`newcompute_normuon.topology`); ``'off'`` keeps every rank doing all
    of it.
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        compile: bool = False,
        ns_kernel: str = "torch",
        elementwise: str = "auto",
        overlap: bool = False,
        distributed: str = "auto",
    ) -> None:
        if distributed not in ("auto", "off"):
            raise ConfigError(f"distributed must be 'auto' or 'off', got {distributed!r}")
        if ns_kernel not in ("torch", "triton"):
            raise ConfigError(f"ns_kernel must be 'torch' or 'triton', got {ns_kernel!r}")
        if elementwise not in ELEMENTWISE:
            raise ConfigError(f"elementwise must be one of {list(ELEMENTWISE)}, got {elementwise!r}")
        for name, choice in (("ns_kernel", ns_kernel), ("elementwise", elementwise)):
            if choice == "triton" and importlib.util.find_spec("triton") is None:
                raise ConfigError(
                    f"newcompute-normuon: {name} = 'triton' needs the 'triton' package, which is not installed. "
                    "Install it with: pip install 'newcompute-normuon[gpu]', or choose 'torch'."
                )
        self._plans: dict[tuple[tuple[int, ...], ...], Plan] = {}
        self._mode = ""
        self.distributed = distributed
        self.overlap = overlap
        self.ops = StepOps(compile, symmetric=ns_kernel == "triton", elementwise=elementwise)
        self.telemetry: dict[str, StatisticSums] = {}
        """Per NorMuon parameter name, the statistics of the steps taken while telemetry collected."""
        super().__init__(params, dict(DEFAULTS))

    @property
    def mode(self) -> str:
        """How the last step placed the Newton–Schulz work: 'single', 'replicated' or 'sharded' ('' before any)."""
        return self._mode

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            _validate(self.param_groups[-1])
        except ConfigError:
            self.param_groups.pop()
            raise
        self._plans.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load like torch does, but keep the per-row second moments in float32.

        ``torch.optim.Optimizer`` casts floating-point state to each
        parameter's dtype; for bfloat16 weights that would round the second
        moments, so they are restored from the saved values afterwards.
        """
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        moments = {
            position: state_dict["state"][saved]["second_moment"]
            for position, saved in enumerate(saved_ids)
            if "second_moment" in state_dict["state"].get(saved, {})
        }
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for position, value in moments.items():
            device = local(params[position]).device
            self.state[params[position]]["second_moment"] = value.to(device=device, dtype=torch.float32)
        self._plans.clear()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        members: list[list[int]] = []
        adamw: list[tuple[list[torch.Tensor], dict[str, Any]]] = []
        for group in self.param_groups:
            present = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            for i in present:
                self._init_state(group, group["params"][i])
            if group["optimizer"] == "adamw":
                adamw.append(([group["params"][i] for i in present], group))
                members.append([])
            else:
                members.append(present)

        def adamw_groups() -> None:
            for params, group in adamw:
                adamw_group(params, group, self.state)

        if any(members):
            observer = statistics.Observer(self.telemetry) if collecting_statistics() else None
            if observer is not None:
                for group, present in zip(self.param_groups, members):
                    for i in present:
                        observer.snapshot(_param_name(group, i), group["params"][i], group)
            plan = self._plan(members)
            engine.run(plan, self.param_groups, self.state, self.ops, self._lanes(plan), adamw_groups)
            if observer is not None:
                observer.record(self.state)
        else:
            adamw_groups()
        return loss

    def _lanes(self, plan: Plan) -> Lanes:
        """Streams when overlap is on and every NorMuon gradient is on one CUDA device (not under FSDP2)."""
        if not self.overlap or plan.topology.mode == "sharded":
            return Lanes()
        devices = {p.grad.device for group_plan in plan.groups for p in group_plan.params}
        device = devices.pop()
        return Lanes(device) if not devices and device.type == "cuda" else Lanes()

    def _init_state(self, group: dict[str, Any], param: torch.Tensor) -> None:
        state = self.state[param]
        if state:
            return
        if group["optimizer"] == "adamw":
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            return
        out_features, _ = logical_shape(param.shape, group["transposed"])
        state["momentum_buffer"] = torch.zeros_like(param)
        state["second_moment"] = torch.zeros(out_features, dtype=torch.float32, device=local(param).device)

    def _plan(self, members: list[list[int]]) -> Plan:
        key = tuple(tuple(m) for m in members)
        if key not in self._plans:
            params = [g["params"][i] for g, m in zip(self.param_groups, members) for i in m]
            names = [_param_name(g, i) for g, m in zip(self.param_groups, members) for i in m]
            topology = detect(params, names, self.distributed)
            self._plans[key] = build_plan(self.param_groups, members, topology)
        self._mode = self._plans[key].topology.mode
        return self._plans[key]
