"""The plain-PyTorch definition of the optical product, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from newcompute_optical import reference


def _range(lo: float, hi: float) -> torch.Tensor:
    return torch.tensor([lo, hi], dtype=torch.float32)


def test_quantize_has_exactly_levels_values_on_the_grid() -> None:
    x = torch.linspace(-3.0, 5.0, 10_001)
    out = reference.quantize(x, _range(-1.0, 2.0), levels=16)
    values = torch.unique(out)
    assert values.numel() == 16
    grid = -1.0 + torch.arange(16, dtype=torch.float32) * (torch.tensor(3.0) / 15)
    assert torch.equal(values, grid)


def test_quantize_clamps_to_the_range_ends() -> None:
    out = reference.quantize(torch.tensor([-7.0, -1.0, 2.0, 9.5]), _range(-1.0, 2.0), levels=4)
    assert out.tolist() == [-1.0, -1.0, 2.0, 2.0]


def test_quantize_rounds_half_to_even() -> None:
    out = reference.quantize(torch.tensor([0.5, 1.5, 2.5, 0.49, 2.51]), _range(0.0, 3.0), levels=4)
    assert out.tolist() == [0.0, 2.0, 2.0, 0.0, 3.0]


def test_empty_range_maps_everything_to_its_value() -> None:
    out = reference.quantize(torch.tensor([-1.0, 0.25, 4.0]), _range(0.25, 0.25), levels=256)
    assert out.tolist() == [0.25, 0.25, 0.25]


def test_lut_snaps_small_non_zero_values_to_the_smallest_level() -> None:
    # levels 7 over [-1, 2]: step 0.5; threshold 0.375 · max(|-1|, |2|) = 0.75
    x = torch.tensor([0.4, -0.4, 0.1, 1.2, -0.9])
    out = reference.quantize_weight(x, _range(-1.0, 2.0), levels=7, lut_min=0.375)
    assert out.tolist() == [0.75, -0.75, 0.0, 1.0, -1.0]
    assert reference.quantize_weight(x, _range(-1.0, 2.0), levels=7, lut_min=None).tolist() == [
        0.5, -0.5, 0.0, 1.0, -1.0,
    ]


def test_dither_is_uniform_on_half_a_level_either_side() -> None:
    noise = reference.dither(512, 1000, 3, 11, torch.tensor(0))
    n = noise.numel()
    assert noise.min() >= -0.5 and noise.max() < 0.5
    assert abs(noise.mean().item()) < 4 * math.sqrt(1 / 12 / n)
    assert noise.var().item() == pytest.approx(1 / 12, rel=0.01)
    counts = torch.histc(noise, bins=10, min=-0.5, max=0.5)
    assert (counts - n / 10).abs().max() < 5 * math.sqrt(n / 10)


def test_dither_depends_on_key_and_call_and_is_reproducible() -> None:
    base = reference.dither(8, 13, 0, 5, torch.tensor(2))
    assert torch.equal(base, reference.dither(8, 13, 0, 5, torch.tensor(2)))
    for other in (reference.dither(8, 13, 1, 5, torch.tensor(2)), reference.dither(8, 13, 0, 6, torch.tensor(2))):
        assert (other != base).float().mean() > 0.9
    assert (reference.dither(8, 13, 0, 5, torch.tensor(3)) != base).float().mean() > 0.9


def test_dithered_read_out_is_unbiased_and_within_one_level() -> None:
    x = torch.full((200_000,), 0.3)
    value_range = _range(0.0, 1.0)
    noise = reference.dither(1, x.numel(), 0, 1, torch.tensor(0)).reshape(-1)
    out = reference.quantize_dithered(x, value_range, levels=5, noise=noise)
    # 0.3 sits at 1.2 levels of 0.25: the read-out is 0.25 with p = 0.8 and 0.5 with p = 0.2
    assert set(out.unique().tolist()) == {0.25, 0.5}
    assert out.mean().item() == pytest.approx(0.3, abs=0.002)


def test_read_out_index_stays_in_range_even_with_rounding_at_the_top() -> None:
    # fp32: 5.512509822845459 · (255 / 5.512509822845459) = 255.0000153, which plus 0.4999999 rounds to 256
    top = 5.512509822845459
    value_range = _range(0.0, top)
    out = reference.quantize_dithered(
        torch.tensor([top, 0.0]), value_range, levels=256, noise=torch.tensor([0.4999999, -0.5])
    )
    assert out.tolist() == [value_range[1].item(), 0.0]


def test_fold_initialises_then_smooths() -> None:
    unset = torch.tensor(reference.UNSET)
    first = reference.fold(unset, _range(-2.0, 4.0), take=0.25)
    assert first.tolist() == [-2.0, 4.0]
    second = reference.fold(first, _range(-6.0, 8.0), take=0.25)
    assert second.tolist() == [-3.0, 5.0]


def test_quantile_range_is_the_nearest_rank_quantile() -> None:
    x = torch.randn(3, 1001, generator=torch.Generator().manual_seed(4))
    got = reference.batch_range(x, (0.01, 0.97))
    expected = torch.quantile(x.reshape(-1), torch.tensor([0.01, 0.97]), interpolation="nearest")
    assert torch.equal(got, expected)
    assert torch.equal(reference.batch_range(x, None), torch.stack([x.min(), x.max()]))


def test_product_with_fine_levels_approaches_the_exact_product() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(1, 6, 16, generator=generator)
    b = torch.randn(1, 5, 16, generator=generator)
    exact = a @ b.transpose(1, 2)
    ranges = (_range(-4.0, 4.0), _range(-4.0, 4.0), _range(-30.0, 30.0))
    out, aq, bq, _ = reference.product(a, b, None, ranges, 65536, None, (0, 1), torch.tensor(0), torch.float32)
    assert (out - exact).abs().max() < 60.0 / 65535 * 3
    coarse, *_ = reference.product(a, b, None, ranges, 16, None, (0, 1), torch.tensor(0), torch.float32)
    assert (coarse - exact).abs().max() > 0.5
