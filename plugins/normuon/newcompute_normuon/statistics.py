"""What NorMuon reports to newcompute's telemetry, per hidden matrix.

Measured only in steps taken while ``newcompute.collecting_statistics()`` is
true (the trainer's ``--telemetry-every`` steps), after the step and in
float32, from what the step left behind — so the fast path is untouched:

* **update RMS**: ``rms(U)`` of the update the step applied, recovered from
  the parameter before and after, ``U = (p_before·(1 − lr·wd) − p_after) / lr``.
  NorMuon's shape scale makes it about ``max(1, rows/cols)^½ · rms(O)``.
* **Newton–Schulz orthogonality residual**: ``‖O·Oᵀ − I‖_F / √r`` for the
  polar-factor estimate ``O`` of the step's Nesterov momentum (``r`` the
  smaller side), recomputed from the momentum buffer and gradient with the
  group's coefficients and step count. The quintic schedule does not
  converge to exact orthogonality by design (its singular values land in
  [0.68, 1.14], see :mod:`newcompute_normuon.coefficients`), so this is a
  level to watch, not 0.
* **normalisation factor spread**: ``max / min`` over rows of
  ``1 / (√v + 1e-10)``, the per-neuron factors NorMuon divides by (``v``
  its per-row second moment). 1 means NorMuon acts like Muon; a large
  spread means a few neurons dominate the raw update.

Each describes the latest measured step (so ``--telemetry-every`` records
follow the run). Parameters sharded by FSDP2 are
not measured (a shard's orthogonality says nothing about the matrix).
"""

from __future__ import annotations

from typing import Any

import torch

from newcompute import Statistic, StatisticSums
from newcompute_normuon.layout import logical, resolve_blocks
from newcompute_normuon.reference import reference_orthogonalize
from newcompute_normuon.topology import is_dtensor

SLOTS = ("steps", "update_rms", "ns_residual", "norm_spread")
STATISTICS = {
    "update_rms": Statistic("update_rms", "RMS of the update NorMuon applied (before the learning rate)", "rms"),
    "ns_residual": Statistic("ns_residual", "Newton–Schulz orthogonality residual ‖OOᵀ − I‖_F/√r", "ratio"),
    "norm_spread": Statistic("norm_factor_spread", "Largest over smallest per-row normalisation factor", "ratio"),
}
_EPS = 1e-10


def orthogonality_residual(ortho: torch.Tensor) -> torch.Tensor:
    """``‖O·Oᵀ − I‖_F / √r`` on the smaller side ``r`` of ``O``."""
    wide = ortho if ortho.shape[0] <= ortho.shape[1] else ortho.T
    gram = wide @ wide.T
    identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.matrix_norm(gram - identity) / gram.shape[0] ** 0.5


def normalisation_spread(second_moment: torch.Tensor) -> torch.Tensor:
    """``max / min`` of the per-row factors ``1 / (√v + ε)``, i.e. ``(max √v + ε) / (min √v + ε)``."""
    root = second_moment.float().sqrt()
    return (root.amax() + _EPS) / (root.amin() + _EPS)


class Observer:
    """Snapshots NorMuon parameters before a measured step and records that step's statistics after it."""

    def __init__(self, sums: dict[str, StatisticSums]) -> None:
        self.sums = sums
        self.before: list[tuple[str, torch.Tensor, torch.Tensor, dict[str, Any]]] = []

    def snapshot(self, name: str, param: torch.Tensor, group: dict[str, Any]) -> None:
        if is_dtensor(param):
            return
        self.before.append((name, param, param.detach().float().clone(), group))

    @torch.no_grad()
    def record(self, state: dict[torch.Tensor, dict[str, Any]]) -> None:
        for name, param, before, group in self.before:
            sums = self.sums.get(name)
            if sums is None:
                sums = self.sums[name] = StatisticSums(SLOTS, param.device)
            sums.reset()
            lr, decay = group["lr"], group["weight_decay"]
            update = (before * (1.0 - lr * decay) - param.float()) / lr if lr > 0 else torch.zeros_like(before)
            sums.add("steps", 1.0)
            sums.add("update_rms", update.square().mean().sqrt())
            sums.add("ns_residual", self._residual(param, state[param], group))
            sums.add("norm_spread", normalisation_spread(state[param]["second_moment"]))
        self.before.clear()

    @staticmethod
    def _residual(param: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> torch.Tensor:
        beta = group["momentum"]
        grad, momentum = param.grad.float(), state["momentum_buffer"].float()
        source = (1.0 - beta) * grad + beta * momentum if group["nesterov"] else momentum
        matrix = logical(source, group["transposed"])
        blocks = resolve_blocks(group["splits"], matrix.shape[0], "")
        residuals = [
            orthogonality_residual(
                reference_orthogonalize(matrix[b.start : b.stop], group["coefficients"], group["ns_steps"])
            )
            for b in blocks
        ]
        return torch.stack(residuals).mean()


def report(sums: StatisticSums) -> dict[Statistic, torch.Tensor]:
    return {stat: sums.ratio(slot, "steps") for slot, stat in STATISTICS.items()}
