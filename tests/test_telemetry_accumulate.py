"""The collection switch and StatisticSums: in-place sums that survive casts and stay out of state dicts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import newcompute as nc


def test_collection_is_off_by_default_and_nests() -> None:
    assert not nc.collecting_statistics()
    with nc.collect_statistics():
        assert nc.collecting_statistics()
        with nc.collect_statistics(enabled=False):
            assert not nc.collecting_statistics()
        assert nc.collecting_statistics()
    assert not nc.collecting_statistics()


def test_sums_minima_maxima_and_ratio() -> None:
    sums = nc.StatisticSums(["hits", "seen"], minima=["low"], maxima=["high"])
    storage = sums.sums.data_ptr()
    for values in (torch.tensor([1.0, -3.0, 5.0]), torch.tensor([0.5, 7.0])):
        sums.add("hits", (values > 0).sum())
        sums.add("seen", values.numel())
        sums.minimum("low", values.min())
        sums.maximum("high", values.max())
    assert sums.sums.data_ptr() == storage  # updated in place: a captured graph replays the same memory
    assert sums.ratio("hits", "seen").item() == 4 / 5
    assert sums["low"].item() == -3.0 and sums["high"].item() == 7.0
    sums.reset()
    assert sums["hits"].item() == 0 and sums["low"].item() == math.inf and sums.ratio("hits", "seen").item() == 0


def test_sums_keep_float64_through_a_cast_and_are_not_saved() -> None:
    holder = nn.Module()
    holder.lin = nn.Linear(2, 2)
    holder.telemetry = nc.StatisticSums(["seen"])
    holder.telemetry.add("seen", 2.0**30 + 1)
    holder.to(torch.bfloat16)
    assert holder.telemetry.sums.dtype == torch.float64 and holder.telemetry["seen"].item() == 2.0**30 + 1
    assert not any(key.startswith("telemetry") for key in holder.state_dict())


def test_sums_built_on_meta_start_fresh_when_materialised() -> None:
    with torch.device("meta"):
        sums = nc.StatisticSums(["seen"], minima=["low"])
    sums.to_empty(device="cpu")
    assert sums["seen"].item() == 0 and sums["low"].item() == math.inf


def test_histograms_count_in_place_with_a_mask_and_reset() -> None:
    sums = nc.StatisticSums(["seen"], histograms={"exponent": 4})
    storage = sums.counts.data_ptr()
    assert sums.untouched()
    sums.count("exponent", torch.tensor([0, 2, 2, 3, -1, 4]))
    sums.count("exponent", torch.tensor([[1, 2], [3, 3]]), torch.tensor([[True, False], [True, True]]))
    assert sums.counts.data_ptr() == storage
    assert sums.histogram("exponent").tolist() == [1.0, 1.0, 2.0, 3.0]
    assert sums.histogram("exponent").dtype == torch.float64 and not sums.untouched()
    sums.reset()
    assert sums.histogram("exponent").tolist() == [0.0] * 4 and sums.untouched()
    assert "counts" not in sums.state_dict()


def test_statistics_rows_sample_whole_rows_or_columns_only_while_asked() -> None:
    x = torch.arange(4 * 6 * 8).reshape(4, 6, 8)
    assert nc.statistics_rows(x) is x
    with nc.collect_statistics(row_stride=3):
        assert nc.statistics_row_stride() == 3
        assert torch.equal(nc.statistics_rows(x), x[:, 0::3, :])
        assert torch.equal(nc.statistics_rows(x, whole=-2), x[:, :, 0::3])
        assert torch.equal(nc.statistics_rows(x, whole=1), x[:, :, 0::3])
        flat = torch.arange(5)
        assert nc.statistics_rows(flat) is flat
    assert nc.statistics_row_stride() == 1
    with pytest.raises(ValueError, match="row_stride"):
        with nc.collect_statistics(row_stride=0):
            pass
