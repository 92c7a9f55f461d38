"""The definition of a bit flip, in plain PyTorch: runs anywhere, and the GPU kernel must match it bit for bit.

For each element at flat index i of a tensor, each bit of a field (sign
and exponent together, or fraction) flips independently with probability
2⁻ⁿ: the flip mask is the AND of n random 32-bit words (only the low 16
bits are used for 16-bit formats). Word w comes from Philox4x32-10 with

* key ``(seed, stream)``, where ``stream`` identifies the layer,
* counter ``(i, call, w // 4, group)``, taking lane ``w % 4``,

where ``call`` counts the layer's forward calls (so every call draws anew
and a restored counter replays exactly) and ``group`` separates input and
weight, exponent and fraction. Then, if a threshold t > 0 is set, results
with ``|y| >= t`` (compared in float32) or NaN become +0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from newcompute import philox4x32
from newcompute_bitflip.formats import layout_of

MASK32 = 0xFFFF_FFFF
MAX_ELEMENTS = 2**32
"""Element indices are one 32-bit counter word."""


@dataclass(frozen=True)
class FlipSpec:
    """What one flip does: how many AND-ed words per field, which counter group, which threshold."""

    exp_halves: int
    frac_halves: int
    exp_group: int
    frac_group: int
    threshold: float
    key: tuple[int, int]

    @property
    def is_identity(self) -> bool:
        return self.exp_halves == 0 and self.frac_halves == 0 and self.threshold == 0.0


def random_mask(
    numel: int, halves: int, group: int, call: torch.Tensor, key: tuple[int, int], field: int = MASK32
) -> torch.Tensor:
    """Per element, ``field`` AND n random words: each bit of ``field`` set with probability 2⁻ⁿ, n = ``halves``.

    Returned as ``int64`` holding ``uint32``. Words are drawn four at a
    time (one Philox block), and eagerly only for elements whose mask is
    still non-zero: once every bit is cleared, further words cannot set it
    again, so skipping them changes nothing and saves most of the work at
    small probabilities. Under ``torch.compile`` or CUDA-graph capture the
    words are drawn for every element instead, with the same result:
    selecting the live elements has a shape that depends on the data (a
    graph break, and on CUDA a wait for the GPU that capture refuses).
    """
    if numel >= MAX_ELEMENTS:
        raise ValueError(f"bitflip handles tensors of fewer than 2^32 elements, got {numel}")
    device = call.device
    mask = torch.full((numel,), field, dtype=torch.int64, device=device)
    alive = torch.arange(numel, dtype=torch.int64, device=device)
    counter_rest = (call.to(torch.int64), torch.tensor(group, device=device))
    compact = not _traced(device)
    for block in range((halves + 3) // 4):
        lanes = philox4x32((alive, counter_rest[0], torch.tensor(block, device=device), counter_rest[1]), key)
        bits = mask[alive] if compact else mask
        for lane in lanes[: min(4, halves - 4 * block)]:
            bits &= lane
        if compact:
            mask[alive] = bits
            alive = alive[bits != 0]
    return mask


def _traced(device: torch.device) -> bool:
    """Whether this call is being compiled or captured into a CUDA graph, rather than run eagerly."""
    if torch.compiler.is_compiling():
        return True
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _as_bits(x: torch.Tensor) -> torch.Tensor:
    layout = layout_of(x.dtype)
    return x.contiguous().view(layout.int_dtype).to(torch.int64) & ((1 << layout.width) - 1)


def _from_bits(bits: torch.Tensor, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
    layout = layout_of(dtype)
    signed = torch.where(bits >= 1 << (layout.width - 1), bits - (1 << layout.width), bits)
    return signed.to(layout.int_dtype).view(dtype).reshape(shape)


def flip_bits(x: torch.Tensor, call: torch.Tensor, spec: FlipSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x`` with bits flipped and large values zeroed, and the mask of kept elements (``None`` without threshold)."""
    layout = layout_of(x.dtype)
    bits = _as_bits(x).reshape(-1)
    for halves, group, field in (
        (spec.exp_halves, spec.exp_group, layout.sign_exponent),
        (spec.frac_halves, spec.frac_group, layout.fraction),
    ):
        if halves:
            bits = bits ^ random_mask(bits.numel(), halves, group, call, spec.key, field)
    flipped = _from_bits(bits, x.dtype, x.shape)
    if spec.threshold == 0.0:
        return flipped, None
    keep = flipped.to(torch.float32).abs() < spec.threshold
    return torch.where(keep, flipped, torch.zeros((), dtype=x.dtype, device=x.device)), keep
