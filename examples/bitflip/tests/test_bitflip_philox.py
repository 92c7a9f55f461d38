"""Philox4x32-10 in PyTorch against published known-answer vectors and big-integer arithmetic."""

from __future__ import annotations

import random

import pytest
import torch

from newcompute_bitflip.philox import _mulhilo, philox4x32

# Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds): counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    words = philox4x32(tuple(torch.tensor(c) for c in counter), key)
    assert tuple(int(w) for w in words) == expected


def test_mulhilo_matches_big_integer_products() -> None:
    rng = random.Random(0)
    values = [0, 1, 0xFFFFFFFF, 0x80000000] + [rng.getrandbits(32) for _ in range(1000)]
    for multiplier in (0xD2511F53, 0xCD9E8D57):
        high, low = _mulhilo(torch.tensor(values), multiplier)
        assert high.tolist() == [(v * multiplier) >> 32 for v in values]
        assert low.tolist() == [(v * multiplier) & 0xFFFFFFFF for v in values]


def _philox_scalar(counter: list[int], key: list[int]) -> list[int]:
    """Random123's round function written directly on Python integers, one counter at a time."""
    c, k = list(counter), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
        k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
    return c


def test_vectorised_philox_equals_the_scalar_definition_on_random_counters() -> None:
    rng = random.Random(1)
    counters = [[rng.getrandbits(32) for _ in range(4)] for _ in range(64)]
    key = [rng.getrandbits(32), rng.getrandbits(32)]
    columns = tuple(torch.tensor([c[i] for c in counters]) for i in range(4))
    words = philox4x32(columns, (key[0], key[1]))
    got = torch.stack(words, dim=1).tolist()
    assert got == [_philox_scalar(c, key) for c in counters]
