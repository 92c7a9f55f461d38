"""What each optical product reports to newcompute's telemetry: range use, read-out clipping, read-out noise.

Measured only while ``newcompute.collecting_statistics()`` is true, beside
whichever kernel computes the product, from the operands and the ranges
that product used:

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

How, so that a measured step costs little more than a plain one:

* The operands are not quantized again: the product hands back the
  quantized operands it computed (and saved for backward), and the
  statistics take the sampled rows of them. The ranges are the ones the
  call quantized with, snapshotted before training folds the batch in.
* "The fp32 product of the quantized operands" is
  :func:`newcompute_optical.reference.exact_product`: on CUDA the bf16
  (or fp16) operands on tensor cores with fp32 output, whose products are
  exact in fp32, so only the accumulation order differs from an fp32 GEMM.
* On CUDA with Triton, beside one ``torch.aminmax`` of each operand, two
  launches (:mod:`newcompute_optical.kernels.telemetry`) read the product
  and its read-out once and add every term into the float64 sums on the
  device; elsewhere, and under ``torch.compile`` (whose compiler fuses
  them), :func:`record_reference` does the same arithmetic in PyTorch.
  Only the order of the sums differs between the two.

Nothing reads the host, so a measured step can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch

from newcompute import Statistic, StatisticSums, statistics_rows
from newcompute_optical import reference

try:
    from newcompute_optical.kernels import telemetry as kernels
except ImportError:  # no Triton: the PyTorch reference records on every device
    kernels = None

SLOTS = ("calls", "input_use", "weight_use", "output_use", "outputs", "clipped", "noise", "signal")
"""In this order, the layout :mod:`newcompute_optical.kernels.telemetry` writes into."""

STATISTICS = {
    "input_use": Statistic("input_range_use", "Fraction of the input range each batch spans", "fraction"),
    "weight_use": Statistic("weight_range_use", "Fraction of the weight range each batch spans", "fraction"),
    "output_use": Statistic("output_range_use", "Fraction of the output range the exact products span", "fraction"),
    "clipped": Statistic("readout_clip_rate", "Fraction of products outside the output range (clamped)", "fraction"),
    "noise": Statistic("readout_noise_to_signal", "Read-out error power over product power", "ratio"),
}


def new_sums(device: torch.device | None) -> StatisticSums:
    return StatisticSums(SLOTS, device)


def snapshot(ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The three ``(lo, hi)`` ranges as one 3 × 2 copy: what a call quantizes with, before training moves them."""
    return torch.stack(ranges)


def range_use(seen: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """Per row, the fraction of ``ranges``' ``[lo, hi]`` that ``seen``'s ``(min, max)`` spans (fp32)."""
    lo, hi = ranges[..., 0], ranges[..., 1]
    covered = (torch.minimum(seen[..., 1], hi) - torch.maximum(seen[..., 0], lo)).clamp(min=0.0)
    span = hi - lo
    return torch.where(span > 0, covered / torch.where(span > 0, span, 1.0), 0.0)


@torch.no_grad()
def observe(
    sums: StatisticSums,
    a: torch.Tensor,
    b: torch.Tensor,
    aq: torch.Tensor,
    bq: torch.Tensor,
    out: torch.Tensor,
    bias: torch.Tensor | None,
    ranges: torch.Tensor,
) -> None:
    """Record one call of a product from its operands, their quantized copies and its read-out ``out``.

    Range use looks at all of ``a``; the product, and so clipping and noise, at the rows
    ``newcompute.statistics_rows`` samples (all of them outside training telemetry).
    ``ranges``: the call's :func:`snapshot`.
    """
    with torch.autocast(a.device.type, enabled=False):
        exact = reference.exact_product(statistics_rows(aq), bq)
    record(sums, a, b, exact, statistics_rows(out), bias, ranges)


@torch.no_grad()
def record(
    sums: StatisticSums,
    a: torch.Tensor,
    b: torch.Tensor,
    exact: torch.Tensor,
    readout: torch.Tensor,
    bias: torch.Tensor | None,
    ranges: torch.Tensor,
) -> None:
    """Add one call's range use, clipping and read-out noise into ``sums``, on the device.

    ``exact``: the fp32 product of (sampled rows of) ``a`` and ``b`` quantized; ``readout``: those rows'
    read-out, bias included; ``ranges``: the call's :func:`snapshot`.
    """
    a, b, readout = a.detach(), b.detach(), readout.detach()
    bias = None if bias is None else bias.detach()
    if kernels is not None and exact.is_cuda and not torch.compiler.is_compiling():
        kernels.record(sums.slots(SLOTS[0], len(SLOTS)), a, b, exact.contiguous(), readout, bias, ranges)
    else:
        record_reference(sums, a, b, exact, readout, bias, ranges)


def record_reference(
    sums: StatisticSums,
    a: torch.Tensor,
    b: torch.Tensor,
    exact: torch.Tensor,
    readout: torch.Tensor,
    bias: torch.Tensor | None,
    ranges: torch.Tensor,
) -> None:
    """:func:`record` in PyTorch: the definition the Triton kernels are tested against."""
    lo, hi = ranges[2, 0], ranges[2, 1]
    seen = torch.stack([torch.stack(torch.aminmax(x)).float() for x in (a, b, exact)])
    error = readout.float() - exact if bias is None else readout.float() - bias.float() - exact
    terms = (
        torch.full((), exact.numel(), dtype=torch.float64, device=exact.device),
        ((exact < lo) | (exact > hi)).sum(),
        error.square().sum(),
        exact.square().sum(),
    )
    sums.add("calls", 1.0)
    sums.slots("input_use", len(SLOTS) - 1).add_(torch.cat((range_use(seen, ranges), torch.stack(terms))))


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
