"""A literal NorMuon step, one matrix at a time in float32: the oracle for tests.

It follows the paper (Li et al. 2025, Algorithm 1) and the authors'
``normuon.py`` line by line — momentum, Nesterov blend, Newton–Schulz on the
logical ``out × in`` matrix, per-row second moment, norm restore, shape
scale, decoupled decay — and shares nothing with the fast path but the
coefficient tables, so agreement between the two is evidence rather than
tautology. It is deliberately slow: no batching, no fusion, no
distribution.
"""

from __future__ import annotations

from typing import Any

import torch

from newcompute_normuon.coefficients import schedule


def reference_orthogonalize(matrix: torch.Tensor, coefficients: str = "quintic", ns_steps: int = 5) -> torch.Tensor:
    """Newton–Schulz on one matrix of either orientation, in float32."""
    plan = schedule(coefficients, ns_steps)  # type: ignore[arg-type]
    x = matrix.to(torch.float32)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() * plan.norm_scale + plan.eps)
    for a, b, c in plan.steps:
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def reference_normalize(ortho: torch.Tensor, second_moment: torch.Tensor, beta2: float) -> torch.Tensor:
    """Steps 4–8: per-row second moment (updated in place), row normalisation, norm restore, shape scale."""
    norm = ortho.norm()
    second_moment.mul_(beta2).add_((ortho * ortho).mean(dim=1), alpha=1.0 - beta2)
    normalized = ortho / (second_moment.sqrt().unsqueeze(1) + 1e-10)
    normalized = normalized * (norm / (normalized.norm() + 1e-10))
    rows, cols = ortho.shape
    return normalized * max(1.0, rows / cols) ** 0.5


def _split_sizes(splits: Any, out_features: int) -> list[int]:
    if splits is None:
        return [out_features]
    if isinstance(splits, int):
        return [out_features // splits] * splits
    return list(splits)


class ReferenceNorMuon:
    """Applies the literal step to NorMuon parameter groups (the same dicts ``NorMuonAdamW`` takes).

    State per parameter: ``momentum`` (float32, stored layout) and
    ``second_moment`` (float32, one per logical output row).
    """

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.groups = groups
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        beta = group["momentum"]
        grad = param.grad.to(torch.float32)
        transposed = group["transposed"]
        if param.ndim > 2:
            to_logical = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
            to_stored = lambda t: t.reshape(param.shape)  # noqa: E731
        elif transposed:
            to_logical = to_stored = lambda t: t.T  # noqa: E731
        else:
            to_logical = to_stored = lambda t: t  # noqa: E731
        state = self.state.setdefault(
            param,
            {
                "momentum": torch.zeros_like(grad),
                "second_moment": torch.zeros(to_logical(grad).shape[0], dtype=torch.float32, device=grad.device),
            },
        )
        state["momentum"].mul_(beta).add_(grad, alpha=1.0 - beta)
        source = (1.0 - beta) * grad + beta * state["momentum"] if group["nesterov"] else state["momentum"].clone()
        logical = to_logical(source)
        pieces, start = [], 0
        for size in _split_sizes(group["splits"], logical.shape[0]):
            ortho = reference_orthogonalize(logical[start : start + size], group["coefficients"], group["ns_steps"])
            pieces.append(reference_normalize(ortho, state["second_moment"][start : start + size], group["beta2"]))
            start += size
        update = to_stored(torch.cat(pieces))
        param.mul_(1.0 - group["lr"] * group["weight_decay"])
        param.sub_((group["lr"] * update).to(param.dtype))
