"""What a quantized layer reports to newcompute's telemetry, per GEMM role.

Measured only while ``newcompute.collecting_statistics()`` is true, in
float32 beside whichever kernel quantizes, from the tensor a role quantizes
and the scale that role gives it (the comparisons below are exact there):

* **saturation rate**: the fraction of elements whose scaled magnitude is
  beyond the format's largest value (``max_normal``), which the cast clamps
  to it. MX picks each block's scale from its own maximum, so with
  ``scale_mode="floor"`` only values between ``max_normal`` and the next
  power of two saturate (OCP MX v1.0 §6.3); per-tensor FP8 with delayed
  scaling saturates whenever a tensor outgrows its history.
* **underflow rate**: the fraction of non-zero elements that round to zero
  (scaled magnitude at most half the smallest subnormal).
* **shared exponent min / max** (MX): the smallest and largest E8M0 block
  exponent among blocks that hold a non-zero value.
* **shared exponent histogram** (MX): per role, how many blocks holding a
  non-zero value used each E8M0 exponent, one bin per exponent from −127 to
  127 (the whole E8M0 range; code 0xFF, NaN, is no exponent).
* **amax** (per-tensor FP8): the largest ``max|x|`` seen per tensor kind.
* **amax history** (per-tensor FP8, delayed scaling): the newest
  :data:`AMAX_HISTORY_SHOWN` entries of the window the scale is chosen from,
  newest first (bin ``i`` is ``i`` training calls ago; 0 where not filled yet).
  It is the scaling state itself, copied as a measured call leaves it.

On CUDA one Triton kernel launch (:mod:`newcompute_mx.statistics_kernel`)
makes each observation, adding its counts (and an MX one's exponent bounds
and histogram) into the sums with atomics, no host sync: counted with
PyTorch an MX observation is some forty small kernels and a per-tensor one
some fifteen, each replaying in microseconds, and a measured step makes
thousands of them (six roles in every layer). Elsewhere, and while
``torch.compile`` traces (which fuses them itself), the PyTorch code below
counts the same numbers; tests hold the two equal.

Rates are over every element measured since the model was built. A
training step that ``--telemetry-every`` measures looks at every N-th row
of the activations and gradients (``newcompute.statistics_rows``; blocks
stay whole), and at the weights whole; ``newcompute inspect`` at every row. Only
roles that were measured are reported: the backward roles (``dgrad_*``,
``wgrad_*``) appear after training steps, not in ``newcompute inspect``
(forward passes only).
"""

from __future__ import annotations

import torch

from newcompute import Statistic, StatisticSums
from newcompute_mx.formats import SCALE_MAX_EXPONENT, SCALE_MIN_EXPONENT, ElementFormat
from newcompute_mx.reference import ScaleMode, pow2, shared_exponents

ROLES = ("fwd_input", "fwd_weight", "dgrad_weight", "dgrad_grad_output", "wgrad_input", "wgrad_grad_output")
KINDS = ("input", "weight", "grad_output")
NO_EXPONENT = 1 << 20
"""What an observation with no block holding a value leaves as its exponent bounds (±): none to report."""
EXPONENT_BINS = tuple(float(e) for e in range(SCALE_MIN_EXPONENT, SCALE_MAX_EXPONENT + 1))
"""The histogram's bins: every E8M0 exponent (OCP MX v1.0 §5.4: bias 127, 0xFF is NaN)."""
AMAX_HISTORY_SHOWN = 16
"""How many of the newest amax-history entries a report carries (the window may hold up to 65536)."""


def new_sums(device: torch.device | None) -> StatisticSums:
    counted = [f"{role}_{what}" for role in ROLES for what in ("saturated", "underflow", "seen")]
    return StatisticSums(
        counted,
        device,
        minima=[f"{role}_exp_min" for role in ROLES],
        maxima=[f"{role}_exp_max" for role in ROLES] + [f"{kind}_amax" for kind in KINDS],
        histograms={
            **{f"{role}_exp_hist": len(EXPONENT_BINS) for role in ROLES},
            **{f"{kind}_amax_window": AMAX_HISTORY_SHOWN for kind in KINDS},
        },
    )


def _count(sums: StatisticSums, role: str, magnitude: torch.Tensor, scaled: torch.Tensor, fmt: ElementFormat) -> None:
    """Saturated: beyond ``max_normal``. Underflow: a non-zero value at most half the smallest subnormal, which
    rounds to zero (half itself ties to the even neighbour, zero). Both comparisons are exact in float32."""
    sums.add(f"{role}_saturated", (scaled > fmt.max_normal).sum())
    sums.add(f"{role}_underflow", ((magnitude > 0) & (scaled <= fmt.min_subnormal / 2)).sum())


def _blocks(x: torch.Tensor, axis: int, block_size: int) -> torch.Tensor:
    """``|x|`` in float32 with ``axis`` last, zero-padded to whole blocks: ``(..., n_blocks, block_size)``."""
    moved = x.detach().float().abs().movedim(axis, -1)
    if moved.shape[-1] % block_size:
        moved = torch.nn.functional.pad(moved, (0, block_size - moved.shape[-1] % block_size))
    return moved.reshape(*moved.shape[:-1], -1, block_size)


@torch.no_grad()
def observe_mx(
    sums: StatisticSums, role: str, tensor: torch.Tensor, axis: int, fmt: ElementFormat, block_size: int, mode: ScaleMode
) -> None:
    """Record one MX quantization of ``tensor`` along ``axis`` (the quantizer's own scale rule).

    Float32 throughout, which is exact here: dividing by the block's power of two only shifts exponents (a
    value pushed below float32's range would round to zero in any element format too), and the scale
    exponent comes from the reference's float64 rule on the block maxima alone.
    """
    if tensor.is_cuda and not torch.compiler.is_compiling():
        from newcompute_mx.statistics_kernel import observe_mx_blocks

        slots = (sums.slots(f"{role}_saturated", 3), sums.slots(f"{role}_exp_min", 1), sums.slots(f"{role}_exp_max", 1))
        observe_mx_blocks(*slots, sums.histogram(f"{role}_exp_hist"), tensor, axis, fmt, block_size, mode == "ceil")
        return
    magnitude = _blocks(tensor, axis, block_size)
    amax = magnitude.amax(dim=-1)
    usable = torch.isfinite(amax)
    exponent = shared_exponents(torch.where(usable, amax, 0.0).double(), fmt, mode)
    scaled = torch.where(usable.unsqueeze(-1), magnitude * pow2(-exponent).float().unsqueeze(-1), 0.0)
    _count(sums, role, magnitude, scaled, fmt)
    sums.add(f"{role}_seen", tensor.numel())
    holding = usable & (amax > 0)
    sums.minimum(f"{role}_exp_min", torch.where(holding, exponent, NO_EXPONENT).amin())
    sums.maximum(f"{role}_exp_max", torch.where(holding, exponent, -NO_EXPONENT).amax())
    sums.count(f"{role}_exp_hist", (exponent - SCALE_MIN_EXPONENT).clamp(0, len(EXPONENT_BINS) - 1), holding)


@torch.no_grad()
def observe_scaled(
    sums: StatisticSums,
    role: str,
    kind: str,
    tensor: torch.Tensor,
    seen: torch.Tensor,
    fmt: ElementFormat,
    scale: torch.Tensor,
) -> None:
    """Record one per-tensor FP8 cast of ``tensor`` with ``scale`` (the product rounded to float32, as cast).

    The rates count the elements of ``seen`` (``tensor`` or the rows of it telemetry samples); the amax is
    the whole tensor's, as the scaling itself sees it.
    """
    if tensor.is_cuda and not torch.compiler.is_compiling():
        from newcompute_mx.statistics_kernel import observe_scaled_cast

        counted, amax = sums.slots(f"{role}_saturated", 3), sums.slots(f"{kind}_amax", 1)
        observe_scaled_cast(counted, amax, tensor, seen, fmt, scale)
        return
    magnitude = seen.detach().float().abs()
    scaled = magnitude * scale.float()
    _count(sums, role, magnitude, scaled, fmt)
    sums.add(f"{role}_seen", seen.numel())
    sums.maximum(f"{kind}_amax", tensor.detach().abs().amax().float())


@torch.no_grad()
def observe_window(sums: StatisticSums, kind: str, window: torch.Tensor) -> None:
    """Keep the newest entries of ``kind``'s amax window as this call left it (``window``: newest first).

    A copy, not the live window: telemetry is read after later steps have moved the window on.
    """
    shown = min(AMAX_HISTORY_SHOWN, window.numel())
    sums.histogram(f"{kind}_amax_window")[:shown].copy_(window[:shown])


def _described(name: str, description: str, unit: str) -> Statistic:
    return Statistic(name, description, unit)


def measured_roles(sums: StatisticSums, roles: list[str]) -> list[str]:
    """The roles among ``roles`` that saw elements (one host read, at logging time only)."""
    if not roles:
        return []
    seen = torch.stack([sums[f"{role}_seen"] for role in roles]).tolist()
    return [role for role, count in zip(roles, seen) if count > 0]


def _amax_history(sums: StatisticSums, roles: list[str], window: int) -> dict[Statistic, torch.Tensor]:
    """The newest entries of each measured kind's amax window (``window`` entries long), as last observed."""
    shown = min(AMAX_HISTORY_SHOWN, window)
    measured = [kind for kind in KINDS if any(role.endswith(f"_{kind}") for role in roles)]
    return {
        Statistic(
            f"{kind}_amax_history",
            f"max|x| of the {kind.replace('_', ' ')} in the last {shown} training calls, newest first",
            "value",
            tuple(float(i) for i in range(shown)),
        ): sums.histogram(f"{kind}_amax_window")[:shown]
        for kind in measured
    }


def report(
    sums: StatisticSums, roles: list[str], block_scaled: bool, amax_window: int | None = None
) -> dict[Statistic, torch.Tensor]:
    """The statistics of ``roles`` (those measured), and the FP8 amaxes; an unmeasured exponent reads 0.

    ``amax_window`` (delayed FP8 scaling only) is the length of the scaling window, whose newest entries
    :func:`observe_window` kept.
    Every role's rates (and exponent bounds) come from one computation over the slots of all roles (laid
    out by :func:`new_sums`), each value a view of it.
    """
    out: dict[Statistic, torch.Tensor] = {}
    counted = sums.slots(f"{ROLES[0]}_saturated", 3 * len(ROLES)).view(len(ROLES), 3)
    seen = counted[:, 2]
    rates = counted[:, :2] / seen.clamp(min=1.0).unsqueeze(1)
    bounds = sums.slots(f"{ROLES[0]}_exp_min", 2 * len(ROLES)).view(2, len(ROLES))
    exponents = torch.where((seen > 0) & (bounds.abs() < NO_EXPONENT), bounds, 0.0) if block_scaled else bounds
    for role in roles:
        at = ROLES.index(role)
        label = role.replace("_", " ")
        clamped = f"Fraction of {label} elements clamped to the format's max"
        out[_described(f"{role}_saturation", clamped, "fraction")] = rates[at, 0]
        zeroed = f"Fraction of {label} elements that became zero"
        out[_described(f"{role}_underflow", zeroed, "fraction")] = rates[at, 1]
        if block_scaled:
            for row, (bound, word) in enumerate((("min", "Smallest"), ("max", "Largest"))):
                out[_described(f"{role}_exponent_{bound}", f"{word} shared block exponent of {label}", "log2")] = (
                    exponents[row, at]
                )
            histogram = Statistic(
                f"{role}_exponent_histogram", f"Blocks of {label} per shared E8M0 exponent", "count", EXPONENT_BINS
            )
            out[histogram] = sums.histogram(f"{role}_exp_hist")
    if not block_scaled:
        amaxes = sums.slots(f"{KINDS[0]}_amax", len(KINDS))
        amaxes = torch.where(torch.isfinite(amaxes), amaxes, 0.0)
        for at, kind in enumerate(KINDS):
            out[_described(f"{kind}_amax", f"Largest max|x| of the {kind.replace('_', ' ')} seen", "value")] = (
                amaxes[at]
            )
        if amax_window is not None:
            out.update(_amax_history(sums, roles, amax_window))
    return out
