"""What a kernel needs to reproduce a product's noise stream and read-out."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Noise(NamedTuple):
    """A product's Philox key and its per-call counter (a device tensor, read by the kernel)."""

    calls: torch.Tensor
    key0: int
    key1: int


class Readout(NamedTuple):
    """The noisy read-out: quantize to ``levels`` levels of ``value_range`` with ``noise``'s dither."""

    value_range: torch.Tensor
    levels: int
    noise: Noise
