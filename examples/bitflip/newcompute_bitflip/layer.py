"""A linear layer whose input and weight suffer random bit flips on every call.

Flips are transient faults: the stored weight never changes, each forward
draws new flips of the operands the matrix product consumes. Under autocast
the operands are first cast to the autocast dtype, so bits flip in the
format the hardware would hold (bf16 on GPU), not in the fp32 master copy.
Weights flip in their storage layout (``in × out`` for GPT-2's ``Conv1D``),
so a checkpoint replays the same faults whatever loads it.

While ``newcompute.collecting_statistics()`` is true the layer also counts,
on the device, how many elements of each operand the flips changed (a
zeroed element counts; an element whose flips cancelled does not), for
``newcompute inspect`` and ``--telemetry-every``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import newcompute as nc
from newcompute_bitflip.config import BitFlipConfig, halves
from newcompute_bitflip.ops import flip
from newcompute_bitflip.reference import FlipSpec

TELEMETRY_SLOTS = ("calls", "input_flipped", "inputs", "weight_flipped", "weights")
INPUT_GROUPS = (0, 1)
WEIGHT_GROUPS = (2, 3)


def changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """How many elements differ bit for bit (compared as integers, so NaN and -0.0 count correctly)."""
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[before.element_size()]
    return (before.detach().view(as_int) != after.detach().view(as_int)).sum()


def _spec(p_exp: float, p_frac: float, threshold: float, groups: tuple[int, int], key: tuple[int, int]) -> FlipSpec:
    return FlipSpec(halves(p_exp), halves(p_frac), groups[0], groups[1], threshold, key)


class BitFlipLinear(nc.ReplacedLinear):
    """Stands in for ``nn.Linear`` or ``Conv1D``; ``bitflip_calls`` (a buffer) counts forward calls."""

    def __init__(self, source: nn.Module, config: BitFlipConfig, name: str) -> None:
        super().__init__(source)
        key = nc.RandomStream.for_layer(config.seed, name).key
        self.inputs = _spec(config.x_p_exp, config.x_p_frac, config.x_zero_out_t, INPUT_GROUPS, key)
        self.weights = _spec(config.w_p_exp, config.w_p_frac, config.w_zero_out_t, WEIGHT_GROUPS, key)
        self.backend = config.backend
        self.register_buffer("bitflip_calls", torch.zeros((), dtype=torch.int64, device=source.weight.device))
        self.telemetry = nc.StatisticSums(TELEMETRY_SLOTS, source.weight.device)

    def _operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        return x, weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias = self._operands(x)
        clean_x, clean_weight = x, weight
        x = flip(x, self.bitflip_calls, self.inputs, self.backend)
        weight = flip(weight, self.bitflip_calls, self.weights, self.backend)
        if nc.collecting_statistics() and not nc.probing():
            self._count(clean_x, x, clean_weight, weight)
        with torch.no_grad():
            self.bitflip_calls += 1
        return F.linear(x, weight.t() if self.weight_transposed else weight, bias)

    @torch.no_grad()
    def _count(self, x: torch.Tensor, flipped_x: torch.Tensor, weight: torch.Tensor, flipped_w: torch.Tensor) -> None:
        self.telemetry.add("calls", 1.0)
        self.telemetry.add("input_flipped", changed(x, flipped_x))
        self.telemetry.add("inputs", x.numel())
        self.telemetry.add("weight_flipped", changed(weight, flipped_w))
        self.telemetry.add("weights", weight.numel())

    def extra_repr(self) -> str:
        def rate(n: int) -> str:
            return f"2^-{n}" if n else "0"

        return (
            f"{super().extra_repr()}, x_p=({rate(self.inputs.exp_halves)}, {rate(self.inputs.frac_halves)}), "
            f"w_p=({rate(self.weights.exp_halves)}, {rate(self.weights.frac_halves)}), "
            f"x_zero_out_t={self.inputs.threshold}, w_zero_out_t={self.weights.threshold}"
        )
