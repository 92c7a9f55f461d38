"""The PyTorch definition of a bit flip: stream layout, bit fields, statistics, zero-out and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from newcompute_bitflip import reference
from newcompute_bitflip.formats import LAYOUTS
from newcompute_bitflip.ops import flip
from newcompute_bitflip.reference import FlipSpec, flip_bits, random_mask


def _philox_scalar(counter: list[int], key: list[int]) -> list[int]:
    """Random123's Philox4x32-10 round function on Python integers: the independent reference for the masks."""
    c, k = list(counter), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
        k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
    return c


KEY = (7, 0x1234567)


def spec(exp: int = 0, frac: int = 0, threshold: float = 0.0, key: tuple[int, int] = KEY) -> FlipSpec:
    return FlipSpec(exp_halves=exp, frac_halves=frac, exp_group=0, frac_group=1, threshold=threshold, key=key)


def bits_of(x: torch.Tensor) -> torch.Tensor:
    layout = LAYOUTS[x.dtype]
    return x.view(layout.int_dtype).to(torch.int64) & ((1 << layout.width) - 1)


def test_mask_is_the_and_of_the_documented_philox_words() -> None:
    """Element i, call c, n words: AND of lane w%4 of Philox(counter=(i, c, w//4, group), key), w < n."""
    call, group, n = 5, 1, 6
    mask = random_mask(8, n, group, torch.tensor(call), KEY)
    for i in range(8):
        words = [w for block in range(2) for w in _philox_scalar([i, call, block, group], list(KEY))][:n]
        expected = 0xFFFFFFFF
        for word in words:
            expected &= word
        assert int(mask[i]) == expected


@pytest.mark.parametrize("n", [5, 6, 9, 16])
def test_drawing_for_every_element_gives_the_masks_of_drawing_for_the_live_ones(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled or captured, words are drawn for every element; eagerly only while its mask is non-zero."""
    call = torch.tensor(3)
    compacted = random_mask(4096, n, 0, call, KEY)
    monkeypatch.setattr(reference, "_traced", lambda device: True)
    assert torch.equal(random_mask(4096, n, 0, call, KEY), compacted)
    assert (compacted == 0).any()  # some elements dropped out after the first block of words


@pytest.mark.parametrize("dtype", list(LAYOUTS), ids=str)
def test_flips_stay_in_their_bit_field(dtype: torch.dtype) -> None:
    layout = LAYOUTS[dtype]
    x = torch.randn(4096).to(dtype)
    call = torch.tensor(0)
    frac_only, _ = flip_bits(x, call, spec(frac=1))
    exp_only, _ = flip_bits(x, call, spec(exp=1))
    changed_frac = bits_of(frac_only) ^ bits_of(x)
    changed_exp = bits_of(exp_only) ^ bits_of(x)
    assert int((changed_frac & layout.sign_exponent).count_nonzero()) == 0
    assert int((changed_exp & layout.fraction).count_nonzero()) == 0
    assert int(changed_frac.count_nonzero()) > 0 and int(changed_exp.count_nonzero()) > 0


@pytest.mark.parametrize("halves", [1, 2, 3, 5])
def test_each_bit_flips_with_probability_two_to_minus_n(halves: int) -> None:
    """Per bit position, the flip count is Binomial(N, 2⁻ⁿ): within 5 standard deviations."""
    x = torch.zeros(20_000, dtype=torch.float32)
    out, _ = flip_bits(x, torch.tensor(3), spec(exp=halves, frac=halves))
    changed = bits_of(out)
    p, n = 2.0**-halves, x.numel()
    for bit in range(32):
        count = int(((changed >> bit) & 1).sum())
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)), (bit, count, n * p)
    for first, second in ((0, 1), (22, 23), (30, 31)):
        both = int((((changed >> first) & 1) & ((changed >> second) & 1)).sum())
        assert abs(both - n * p * p) < 5 * math.sqrt(n * p * p), f"bits {first} and {second} must flip independently"


def test_draws_depend_on_call_and_layer_and_replay_exactly() -> None:
    x = torch.randn(2048)
    first, _ = flip_bits(x, torch.tensor(4), spec(frac=2))
    again, _ = flip_bits(x, torch.tensor(4), spec(frac=2))
    next_call, _ = flip_bits(x, torch.tensor(5), spec(frac=2))
    other_layer, _ = flip_bits(x, torch.tensor(4), spec(frac=2, key=(7, 99)))
    assert torch.equal(first, again)
    assert not torch.equal(first, next_call) and not torch.equal(first, other_layer)


def test_zero_out_keeps_only_finite_values_below_the_threshold() -> None:
    x = torch.tensor([1.0, 1.25, -1.3, float("nan"), float("inf"), -0.5, 1.2499])
    out, keep = flip_bits(x, torch.tensor(0), spec(threshold=1.25))
    assert keep.tolist() == [True, False, False, False, False, True, True]
    assert out.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, -0.5, pytest.approx(1.2499)]


def test_threshold_is_compared_in_float32_for_bfloat16_values() -> None:
    """0.2995 lies between the bf16 values 0.298828125 and 0.30078125 and rounds down to the first.

    Compared in bf16, 0.298828125 < bf16(0.2995) would be false and the value dropped; in float32 it is kept.
    """
    x = torch.tensor([0.298828125, 0.30078125], dtype=torch.bfloat16)
    _, keep = flip_bits(x, torch.tensor(0), spec(threshold=0.2995))
    assert torch.tensor(0.2995).to(torch.bfloat16).item() == 0.298828125
    assert keep.tolist() == [True, False]


def test_gradient_passes_straight_through_kept_elements_only() -> None:
    x = torch.tensor([0.5, 2.0, -0.25, 3.0], requires_grad=True)
    y = flip(x, torch.tensor(0), spec(threshold=1.5), backend="torch")
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 3.0, 0.0]


def test_nothing_to_do_returns_the_input_itself() -> None:
    x = torch.randn(3)
    assert flip(x, torch.tensor(0), spec()) is x
