"""The read-out noise generator, in plain PyTorch: Philox-4x32-10 (Salmon et al., SC 2011).

A counter-based generator needs no state besides its key and counter, so the
noise of any output element can be recomputed anywhere: the Triton kernels
evaluate the same function (``tl.philox_impl``) tile by tile, and this module
is the reference they are tested against. Everything is computed on int64
tensors holding 32-bit words, with products split so that no intermediate
exceeds 2⁴⁹ (signed overflow never happens).

The element at (row, col) of an output with ``cols`` columns uses counter
``(idx mod 2³², idx div 2³², call mod 2³², 0)`` with ``idx = row·⌈cols/4⌉ +
col div 4`` and key ``(key0, key1)``; of the four words one call returns,
it takes word ``col mod 4``. Its dither is ``(word >> 8)·2⁻²⁴ − ½``, exactly
representable in fp32 and uniform on [−½, ½).
"""

from __future__ import annotations

import torch

WORD = 0xFFFFFFFF
ROUNDS = 10
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85


def _mul_hi_lo(word: torch.Tensor, constant: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``word × constant`` for 32-bit operands, without overflow."""
    high_part = word * (constant >> 16)
    low_part = word * (constant & 0xFFFF)
    partial = ((high_part & 0xFFFF) << 16) + low_part
    low = partial & WORD
    high = ((high_part >> 16) + (partial >> 32)) & WORD
    return high, low


def philox4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], key0: int, key1: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four random 32-bit words (as int64 tensors) per counter, with Triton's round and key schedule."""
    c0, c1, c2, c3 = counter
    k0, k1 = key0 & WORD, key1 & WORD
    for _ in range(ROUNDS):
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & WORD, (k1 + _KEY_B) & WORD
    return c0, c1, c2, c3


def dither(rows: int, cols: int, key0: int, key1: int, call: torch.Tensor, first_row: int = 0) -> torch.Tensor:
    """The fp32 dither in [−½, ½) of rows ``first_row`` … ``first_row + rows − 1`` of a ``cols``-wide output."""
    groups = (cols + 3) // 4
    device = call.device
    idx = torch.arange(first_row, first_row + rows, dtype=torch.int64, device=device)[:, None] * groups
    idx = idx + torch.arange(groups, dtype=torch.int64, device=device)[None, :]
    step = (call.to(torch.int64) & WORD).expand_as(idx)
    words = philox4x32((idx & WORD, idx >> 32, step, torch.zeros_like(idx)), key0, key1)
    bits = torch.stack(words, dim=-1).reshape(rows, groups * 4)[:, :cols]
    return (bits >> 8).to(torch.float32) * 2.0**-24 - 0.5
