"""newcompute.random: Philox4x32-10 against published answers and big integers, and the streams built on it."""

from __future__ import annotations

import random
import warnings
import zlib

import pytest
import torch

import newcompute as nc
from newcompute.random import _mul_hi_lo

# Random123's known-answer vectors (kat_vectors, philox4x32 with 10 rounds): counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox_scalar(counter: list[int], key: list[int]) -> list[int]:
    """Random123's round function written directly on Python integers, one counter at a time."""
    c, k = list(counter), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
        k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
    return c


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    assert tuple(int(w) for w in nc.philox4x32(counter, key)) == expected


def test_products_are_split_without_overflow() -> None:
    rng = random.Random(0)
    values = [0, 1, 0xFFFFFFFF, 0x80000000] + [rng.getrandbits(32) for _ in range(1000)]
    for multiplier in (0xD2511F53, 0xCD9E8D57):
        high, low = _mul_hi_lo(torch.tensor(values), multiplier)
        assert high.tolist() == [(v * multiplier) >> 32 for v in values]
        assert low.tolist() == [(v * multiplier) & 0xFFFFFFFF for v in values]


def test_vectorised_philox_equals_the_scalar_definition_on_random_counters() -> None:
    rng = random.Random(1)
    counters = [[rng.getrandbits(32) for _ in range(4)] for _ in range(64)]
    key = (rng.getrandbits(32), rng.getrandbits(32))
    words = nc.philox4x32(tuple(torch.tensor([c[i] for c in counters]) for i in range(4)), key)
    assert torch.stack(words, dim=1).tolist() == [philox_scalar(c, list(key)) for c in counters]


def test_a_layers_stream_is_its_seed_and_the_crc_of_its_name() -> None:
    stream = nc.RandomStream.for_layer(7, "model.layers.3.mlp.up_proj")
    assert stream.key == (7, zlib.crc32(b"model.layers.3.mlp.up_proj") & 0x7FFFFFFF)
    assert nc.layer_stream("model.layers.3.mlp.up_proj") == stream.stream


def test_uniform_follows_the_documented_counter_layout() -> None:
    stream = nc.RandomStream(3, 11)
    call = torch.tensor(5)
    values = stream.uniform((2, 3, 6), call, first_row=4)
    groups = 2
    for flat_row in range(6):
        for col in range(6):
            idx = (4 + flat_row) * groups + col // 4
            word = philox_scalar([idx & 0xFFFFFFFF, idx >> 32, 5, 0], [3, 11])[col % 4]
            assert values.reshape(6, 6)[flat_row, col].item() == (word >> 8) * 2.0**-24
    assert values.dtype == torch.float32 and values.shape == (2, 3, 6)


def test_draws_replay_from_the_counter_and_differ_between_calls_lanes_and_layers() -> None:
    stream = nc.RandomStream.for_layer(0, "a")
    base = stream.uniform((64, 64), torch.tensor(2))
    assert torch.equal(base, stream.uniform((64, 64), torch.tensor(2)))
    others = [
        stream.uniform((64, 64), torch.tensor(3)),
        stream.uniform((64, 64), torch.tensor(2), lane=1),
        nc.RandomStream.for_layer(0, "b").uniform((64, 64), torch.tensor(2)),
        nc.RandomStream.for_layer(1, "a").uniform((64, 64), torch.tensor(2)),
    ]
    assert all((other != base).float().mean() > 0.99 for other in others)
    assert 0.0 <= base.min() and base.max() < 1.0 and abs(base.mean().item() - 0.5) < 0.02


def test_normal_has_unit_moments() -> None:
    noise = nc.RandomStream(0, 1).normal((256, 256), torch.tensor(0))
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 1.0) < 0.01
    assert torch.isfinite(noise).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_bits_match_cpu_and_no_draw_waits_for_the_gpu() -> None:
    stream = nc.RandomStream.for_layer(5, "model.layers.0.mlp.up_proj")
    call = torch.tensor(9, device="cuda")
    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            on_gpu = stream.uniform((128, 130), call)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(on_gpu.cpu(), stream.uniform((128, 130), call.cpu()))
