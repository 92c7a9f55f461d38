"""Counter-based random numbers for paradigms that draw noise: Philox4x32-10.

A paradigm's noise must replay exactly after ``--resume`` and after
``newcompute.load``, come out the same on any device and in a Triton
kernel, differ between layers, and never make a training step wait for the
GPU. A counter-based generator gives all of that: its output is a pure
function of a key and a counter, with no hidden state. The key is the
run's seed and a stream id derived from the layer's name; the counter is
an element index and a call count that the paradigm keeps in an ``int64``
buffer (so it is saved and restored with the model, and read on the
device, never on the host).

The algorithm is Philox4x32 with 10 rounds (Salmon, Moraes, Dror and Shaw,
"Parallel random numbers: as easy as 1, 2, 3", SC 2011), the generator of
Random123 and of Triton's ``tl.philox``/``tl.philox_impl``, so a kernel
calling those with the same counter words and key reproduces these bits.
Words are ``uint32`` values held in ``int64`` tensors (PyTorch has no
unsigned 32-bit arithmetic); 32×32-bit products are split into 16-bit
halves so no intermediate exceeds 2⁴⁹.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

MASK32 = 0xFFFF_FFFF
ROUNDS = 10
MULTIPLIERS = (0xD251_1F53, 0xCD9E_8D57)
"""Philox4x32's round multipliers (Salmon et al. 2011, table 2; Random123's PHILOX_M4x32_0/1)."""
KEY_INCREMENTS = (0x9E37_79B9, 0xBB67_AE85)
"""The Weyl sequence that bumps the key each round (Random123's PHILOX_W32_0/1: golden ratio, √3 − 1)."""

CounterWords = tuple["torch.Tensor | int", "torch.Tensor | int", "torch.Tensor | int", "torch.Tensor | int"]


def _mul_hi_lo(word: torch.Tensor, multiplier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``word × multiplier`` for ``word`` < 2³², without overflowing int64."""
    low_part = word * (multiplier & 0xFFFF)
    high_part = word * (multiplier >> 16)
    partial = ((high_part & 0xFFFF) << 16) + low_part
    return ((high_part >> 16) + (partial >> 32)) & MASK32, partial & MASK32


def philox4x32(
    counter: CounterWords, key: tuple[int, int], rounds: int = ROUNDS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four random 32-bit words per counter position; the four counter words broadcast together."""
    c0, c1, c2, c3 = (torch.as_tensor(c).to(torch.int64) & MASK32 for c in counter)
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for _ in range(rounds):
        high0, low0 = _mul_hi_lo(c0, MULTIPLIERS[0])
        high1, low1 = _mul_hi_lo(c2, MULTIPLIERS[1])
        c0, c1, c2, c3 = high1 ^ c1 ^ k0, low1, high0 ^ c3 ^ k1, low0
        k0 = (k0 + KEY_INCREMENTS[0]) & MASK32
        k1 = (k1 + KEY_INCREMENTS[1]) & MASK32
    return c0, c1, c2, c3


def layer_stream(name: str) -> int:
    """A stable 31-bit stream id for a layer's qualified name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFF_FFFF


@dataclass(frozen=True)
class RandomStream:
    """The random numbers of one layer: Philox keyed by ``(seed, stream)``.

    ``RandomStream.for_layer(config.seed, name)`` in a replacement's
    constructor gives every layer its own stream from one seed. Draws take
    the call counter as a tensor (a buffer the layer increments under
    ``torch.no_grad()`` after each call), so they are made on its device
    without a host synchronisation, and a restored buffer replays them.
    """

    seed: int
    stream: int

    @classmethod
    def for_layer(cls, seed: int, name: str) -> RandomStream:
        return cls(seed, layer_stream(name))

    @property
    def key(self) -> tuple[int, int]:
        """The Philox key ``(seed, stream)``, each word masked to 32 bits, as a Triton kernel takes it."""
        return self.seed & MASK32, self.stream & MASK32

    def words(self, counter: CounterWords) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four raw words for your own counter layout."""
        return philox4x32(counter, self.key)

    def uniform(
        self, shape: tuple[int, ...], call: torch.Tensor, first_row: int = 0, lane: int = 0
    ) -> torch.Tensor:
        """fp32 values in [0, 1), multiples of 2⁻²⁴, of shape ``shape``, on ``call``'s device.

        The last dimension is the row; element ``(row, col)`` (rows counted
        over the leading dimensions from ``first_row``) takes word ``col mod
        4`` of counter ``(idx mod 2³², idx div 2³², call mod 2³², lane)``
        with ``idx = row·⌈cols/4⌉ + col div 4``, so a kernel tile can
        compute its rows alone. Its value is ``(word >> 8)·2⁻²⁴``, exact in
        fp32. Another ``lane`` gives an independent draw of the same shape.
        """
        cols = shape[-1] if shape else 1
        rows = math.prod(shape[:-1]) if shape else 1
        groups = (cols + 3) // 4
        device = call.device
        idx = torch.arange(first_row, first_row + rows, dtype=torch.int64, device=device)[:, None] * groups
        idx = idx + torch.arange(groups, dtype=torch.int64, device=device)[None, :]
        step = (call.to(torch.int64) & MASK32).expand_as(idx)
        lanes = torch.full_like(idx, lane & MASK32)
        words = philox4x32((idx & MASK32, idx >> 32, step, lanes), self.key)
        bits = torch.stack(words, dim=-1).reshape(rows, groups * 4)[:, :cols]
        return ((bits >> 8).to(torch.float32) * 2.0**-24).reshape(shape)

    def normal(self, shape: tuple[int, ...], call: torch.Tensor, first_row: int = 0) -> torch.Tensor:
        """Standard normal fp32 values by the Box–Muller transform of lanes 0 and 1 of :meth:`uniform`.

        The uniforms are bit-exact everywhere; the logarithm and cosine are
        exact to their fp32 rounding, which may differ by an ulp between
        devices.
        """
        radius = torch.sqrt(-2.0 * torch.log1p(-self.uniform(shape, call, first_row, lane=0)))
        return radius * torch.cos(2.0 * math.pi * self.uniform(shape, call, first_row, lane=1))
