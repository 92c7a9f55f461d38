"""Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3") in plain PyTorch.

A counter-based generator: the random words for an element depend only on
its counter and key, never on what was drawn before, so the same bits come
out on any device, in any order, and from Triton's ``tl.philox`` (the same
algorithm) in the GPU kernel. Values are ``uint32`` held in ``int64``
tensors, since PyTorch has no unsigned 32-bit arithmetic; the 32×32→64-bit
products are split into 16-bit halves so no intermediate exceeds 2⁴⁸.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFF_FFFF
MULTIPLIERS = (0xD251_1F53, 0xCD9E_8D57)
KEY_INCREMENTS = (0x9E37_79B9, 0xBB67_AE85)
ROUNDS = 10


def _mulhilo(value: torch.Tensor, multiplier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit halves of ``value × multiplier`` for ``value`` < 2³²."""
    low_part = value * (multiplier & 0xFFFF)
    high_part = value * (multiplier >> 16)
    high = (high_part + (low_part >> 16)) >> 16
    low = (((high_part & 0xFFFF) << 16) + low_part) & MASK32
    return high, low


def philox4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    key: tuple[int, int],
    rounds: int = ROUNDS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four random 32-bit words per counter position (the four counter words broadcast together)."""
    c0, c1, c2, c3 = (torch.as_tensor(c) & MASK32 for c in counter)
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for _ in range(rounds):
        high0, low0 = _mulhilo(c0, MULTIPLIERS[0])
        high1, low1 = _mulhilo(c2, MULTIPLIERS[1])
        c0, c1, c2, c3 = high1 ^ c1 ^ k0, low1, high0 ^ c3 ^ k1, low0
        k0 = (k0 + KEY_INCREMENTS[0]) & MASK32
        k1 = (k1 + KEY_INCREMENTS[1]) & MASK32
    return c0, c1, c2, c3
