"""``--threads``: torch computes with the cores this process may use, or the number given."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.threads import available_cores, use_threads


@pytest.fixture
def restored_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_default_is_the_affinity_set_and_a_number_is_taken_as_given(restored_threads: None) -> None:
    assert available_cores() == len(os.sched_getaffinity(0))
    assert use_threads(None).startswith(f"{available_cores()} (the cores this process may use")
    assert torch.get_num_threads() == available_cores()
    assert use_threads(3) == "3 (--threads)" and torch.get_num_threads() == 3


def test_transform_sets_the_threads_from_its_flag(restored_threads: None) -> None:
    torch.set_num_threads(2)
    result = CliRunner().invoke(build_app(), ["transform", "--model", "tiny", "--init", "scratch", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1


def test_zero_threads_is_refused_naming_the_field() -> None:
    result = CliRunner().invoke(build_app(), ["transform", "--model", "tiny", "--threads", "0"])
    assert result.exit_code == 2 and "train.threads" in result.output
