"""``--cuda-graphs auto|on|off``: what a run chooses, and the reason it prints, decided without a GPU."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from newcompute import ConfigError, Paradigm, Role
from newcompute.config import TrainSettings
from newcompute.plugins import load_registry
from newcompute.train.graphs import choose_cuda_graphs


class Empty(BaseModel):
    pass


def paradigm(name: str, capturable: bool, *roles: Role) -> Paradigm:
    return Paradigm(name, "", Empty, frozenset(roles or {Role.LAYER}), capturable=capturable)


OPTICAL = paradigm("optical", True, Role.LAYER, Role.ATTENTION)
MX = paradigm("mxfp8", True)
HOSTY = paradigm("hosty", False)
OPTIMIZER = paradigm("normuon", False, Role.OPTIMIZER)


def test_auto_on_one_cuda_gpu_with_capturable_paradigms_captures() -> None:
    choice = choose_cuda_graphs("auto", "cuda", 1, "bf16", [OPTICAL, MX, OPTIMIZER])
    assert choice.enabled
    assert choice.reason.startswith("on: one CUDA GPU and every paradigm in the step (optical, mxfp8) can be captured")


def test_auto_without_paradigms_captures_the_baseline() -> None:
    choice = choose_cuda_graphs("auto", "cuda", 1, "no", [])
    assert choice.enabled and "no paradigm in the step" in choice.reason


@pytest.mark.parametrize(
    ("device", "processes", "precision", "reason"),
    [
        ("cpu", 1, "no", "off: CUDA graph capture needs a CUDA GPU; this run is on cpu"),
        ("cuda", 2, "bf16", "off: CUDA graph capture runs on one process; this run has 2"),
        ("cuda", 1, "fp16", "off: CUDA graph capture does not support fp16"),
    ],
)
def test_auto_where_graphs_cannot_run_is_off_with_the_reason(
    device: str, processes: int, precision: str, reason: str
) -> None:
    choice = choose_cuda_graphs("auto", device, processes, precision, [OPTICAL])
    assert not choice.enabled and choice.reason.startswith(reason)


def test_auto_with_a_paradigm_that_does_not_declare_it_runs_eagerly_and_names_it() -> None:
    choice = choose_cuda_graphs("auto", "cuda", 1, "bf16", [OPTICAL, HOSTY])
    assert not choice.enabled
    assert choice.reason == (
        "off: paradigm hosty does not declare that it can be captured (Paradigm.capturable); "
        "--cuda-graphs on captures anyway"
    )


def test_on_captures_what_auto_would_not_and_says_so() -> None:
    choice = choose_cuda_graphs("on", "cuda", 1, "bf16", [HOSTY, paradigm("noisy", False)])
    assert choice.enabled and "paradigms hosty, noisy do not declare that it can be captured" in choice.reason


def test_on_where_graphs_cannot_run_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^--cuda-graphs on \(train.cuda_graphs\) needs a CUDA GPU; this run is on"):
        choose_cuda_graphs("on", "mps", 1, "no", [OPTICAL])


def test_off_is_off_whatever_the_run() -> None:
    choice = choose_cuda_graphs("off", "cuda", 1, "bf16", [OPTICAL])
    assert not choice.enabled and choice.reason == "off (--cuda-graphs off)"


def test_records_written_with_a_boolean_still_load() -> None:
    assert TrainSettings(cuda_graphs=True).cuda_graphs == "on"
    assert TrainSettings(cuda_graphs=False).cuda_graphs == "off"
    assert TrainSettings().cuda_graphs == "auto"


def test_first_party_layer_and_attention_paradigms_declare_they_can_be_captured() -> None:
    first_party = {"newcompute-optical", "newcompute-mx", "newcompute-bitflip"}
    paradigms = [p for p in load_registry().paradigms.values() if p.plugin in first_party]
    stepping = [p for p in paradigms if p.roles & {Role.LAYER, Role.ATTENTION}]
    assert {p.name for p in stepping} >= {"optical", "mxfp8", "mxfp4", "fp8", "bitflip"}
    assert [p.name for p in stepping if not p.capturable] == []
