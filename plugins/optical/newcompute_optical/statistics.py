"""What each optical product reports to newcompute's telemetry: range use, read-out clipping, read-out noise.

Measured only while ``newcompute.collecting_statistics()`` is true, in plain
PyTorch beside whichever kernel computes the product, from the operands and
the ranges that product used:

* **range use** of a role: the fraction of its running range ``[lo, hi]``
  that the batch spans, ``(min(max x, hi) − max(min x, lo)) / (hi − lo)``
  (0 for an empty range). A value far below 1 means most of the
  ``q_levels`` levels go unused; a range learnt from outliers shows here.
* **read-out clip rate**: the fraction of products of the quantized
  operands that fall outside the output range, where the read-out clamps.
* **read-out noise to signal**: ``Σ(read-out − product)² / Σ product²`` of
  the bias-free read-out against the fp32 product of the quantized operands,
  i.e. the power the photodetector's dithered quantization (and clipping)
  adds, relative to the signal.

Each is averaged over every call measured since the model was built. In
a training step that ``--telemetry-every`` measures, the product is taken
on every N-th row of the activation operand (``--telemetry-stride``);
``newcompute inspect`` takes every row.
"""

from __future__ import annotations

import torch

from newcompute import Statistic, StatisticSums, statistics_rows
from newcompute_optical import reference
from newcompute_optical.config import ProductSettings

SLOTS = ("calls", "input_use", "weight_use", "output_use", "clipped", "outputs", "noise", "signal")

STATISTICS = {
    "input_use": Statistic("input_range_use", "Fraction of the input range each batch spans", "fraction"),
    "weight_use": Statistic("weight_range_use", "Fraction of the weight range each batch spans", "fraction"),
    "output_use": Statistic("output_range_use", "Fraction of the output range the exact products span", "fraction"),
    "clipped": Statistic("readout_clip_rate", "Fraction of products outside the output range (clamped)", "fraction"),
    "noise": Statistic("readout_noise_to_signal", "Read-out error power over product power", "ratio"),
}


def new_sums(device: torch.device | None) -> StatisticSums:
    return StatisticSums(SLOTS, device)


def range_use(seen: torch.Tensor, value_range: torch.Tensor) -> torch.Tensor:
    """The fraction of ``[lo, hi]`` that ``seen`` spans, as a float32 0-d tensor."""
    lo, hi = value_range[0], value_range[1]
    low, high = (bound.float() for bound in torch.aminmax(seen.detach()))
    covered = (torch.minimum(high, hi) - torch.maximum(low, lo)).clamp(min=0.0)
    span = hi - lo
    return torch.where(span > 0, covered / torch.where(span > 0, span, 1.0), torch.zeros_like(span))


@torch.no_grad()
def observe_operands(
    sums: StatisticSums,
    a: torch.Tensor,
    b: torch.Tensor,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    settings: ProductSettings,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Record range use and clipping for one call; return the fp32 product of the quantized operands.

    Range use looks at all of ``a``; the product, and so clipping and noise, at the rows
    ``newcompute.statistics_rows`` samples (all of them outside training telemetry).
    """
    input_range, weight_range, _ = ranges
    with torch.autocast(a.device.type, enabled=False):
        aq = reference.quantize(statistics_rows(a), input_range, settings.q_levels).to(dtype).float()
        bq = reference.quantize_weight(b, weight_range, settings.q_levels, settings.lut_min()).to(dtype).float()
        exact = torch.matmul(aq, bq.transpose(-1, -2))
    record_operands(sums, a, b, exact, ranges)
    return exact


@torch.no_grad()
def record_operands(
    sums: StatisticSums,
    a: torch.Tensor,
    b: torch.Tensor,
    exact: torch.Tensor,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """Record range use of ``a`` and ``b`` and clipping of ``exact``, the fp32 product of (rows of) them."""
    input_range, weight_range, output_range = ranges
    sums.add("calls", 1.0)
    sums.add("input_use", range_use(a, input_range))
    sums.add("weight_use", range_use(b, weight_range))
    sums.add("output_use", range_use(exact, output_range))
    sums.add("clipped", ((exact < output_range[0]) | (exact > output_range[1])).sum())
    sums.add("outputs", exact.numel())


@torch.no_grad()
def observe_readout(
    sums: StatisticSums, exact: torch.Tensor, out: torch.Tensor, bias: torch.Tensor | None, sampled: bool = False
) -> None:
    """Record the read-out's error power against the product it read (``exact``: its sampled rows).

    ``sampled``: ``out`` holds only those rows already.
    """
    readout = (out.detach() if sampled else statistics_rows(out.detach())).float().reshape(exact.shape)
    if bias is not None:
        readout = readout - bias.detach().float()
    sums.add("noise", (readout - exact).square().sum())
    sums.add("signal", exact.square().sum())


def report(sums: StatisticSums, prefix: str = "") -> dict[Statistic, torch.Tensor]:
    """The statistics of one product, names prefixed (``qk_``/``pv_`` inside attention)."""
    values = {
        "input_use": sums.ratio("input_use", "calls"),
        "weight_use": sums.ratio("weight_use", "calls"),
        "output_use": sums.ratio("output_use", "calls"),
        "clipped": sums.ratio("clipped", "outputs"),
        "noise": sums["noise"] / sums["signal"].clamp(min=torch.finfo(torch.float64).tiny),
    }
    out = {}
    for key, value in values.items():
        stat = STATISTICS[key]
        if prefix:
            stat = Statistic(prefix + stat.name, f"{prefix.rstrip('_').upper()}: {stat.description}", stat.unit)
        out[stat] = value
    return out
