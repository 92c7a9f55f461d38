"""Every first-party paradigm's replaced layer, and NorMuon's step, under torch.compile: no graph break, eager's numbers.

A graph break inside a replaced layer splits every compiled model that
uses it and usually marks a host sync (``.item()``, a data-dependent
shape), which also rules out CUDA graphs. Dynamo counts breaks in
``torch._dynamo.utils.counters["graph_break"]``; the ``aot_eager`` backend
traces forward and backward without generating code, so this runs on CPU
in seconds.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from rich.console import Console
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

import newcompute
from newcompute import OptimizerSettings, Registry, load_registry, resolve_paradigm
from newcompute.config import RunConfig
from newcompute.train.display import RunDisplay
from newcompute.train.loop import Trainer
from newcompute.train.setup import build_session

LAYER_PARADIGMS = ["optical", "mxfp8", "mxfp8-e5m2", "mxfp6", "mxfp6-e2m3", "mxfp4", "mxint8", "fp8", "bitflip"]
TABLES = {"bitflip": dict.fromkeys(("x_p_exp", "x_p_frac", "w_p_exp", "w_p_frac"), 2.0**-6)}
"""Flips at 2^-6, two Philox blocks a word, so that the tiny layer flips bits and elements drop out between blocks."""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry()


@pytest.fixture
def graph_breaks() -> Iterator[Callable[[], dict[str, int]]]:
    """The graph breaks dynamo counts from here on, by reason."""
    torch._dynamo.reset()
    counters.clear()
    yield lambda: dict(counters["graph_break"])
    torch._dynamo.reset()


def _replaced(registry: Registry, paradigm: str, source: nn.Module) -> nn.Module:
    use = resolve_paradigm(registry, paradigm, TABLES.get(paradigm, {}))
    layer = registry.call(
        "newcompute_replace_layer", use.paradigm, config=use.config, name="model.layers.0.mlp.up_proj", module=source
    )
    assert layer is not None, paradigm
    return layer.train()


@pytest.mark.parametrize("paradigm", LAYER_PARADIGMS)
def test_replaced_layer_compiles_in_one_graph_and_matches_eager(
    registry: Registry, paradigm: str, graph_breaks: Callable[[], dict[str, int]]
) -> None:
    torch.manual_seed(0)
    source = nn.Linear(32, 16)
    eager = _replaced(registry, paradigm, copy.deepcopy(source))
    compiled_layer = _replaced(registry, paradigm, copy.deepcopy(source))
    compiled = torch.compile(compiled_layer, backend="aot_eager")
    for seed in range(2):  # the second call runs with the state the first left (ranges, counters, amax history)
        x = torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(seed))
        mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, expected = compiled(mine), eager(theirs)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        got.square().sum().backward()
        expected.square().sum().backward()
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-6)
    assert graph_breaks() == {}
    for (name, got_param), expected_param in zip(compiled_layer.named_parameters(), eager.parameters()):
        torch.testing.assert_close(got_param.grad, expected_param.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, got_buffer), expected_buffer in zip(compiled_layer.named_buffers(), eager.buffers()):
        torch.testing.assert_close(got_buffer, expected_buffer, rtol=1e-5, atol=1e-6, msg=name)


def _normuon_steps(registry: Registry, compile_step: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2)
    )
    newcompute.apply(model, [resolve_paradigm(registry, "normuon", {"compile": compile_step})], registry=registry)
    optimizer = newcompute.build_optimizer(model, OptimizerSettings(lr=1e-2, weight_decay=0.1), registry=registry)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return [param.detach().clone() for param in model.parameters()]


def test_normuon_compiled_step_has_no_graph_break_and_matches_eager(
    registry: Registry, graph_breaks: Callable[[], dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from newcompute_normuon import ops

    compiled: list[str] = []

    def compile_without_codegen(fn: Callable[..., object]) -> Callable[..., object]:
        compiled.append(getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "?")))
        return torch.compile(fn, backend="eager", dynamic=False)

    monkeypatch.setattr(ops, "_compiled", compile_without_codegen)
    eager = _normuon_steps(registry, compile_step=False)
    assert compiled == []
    stepped = _normuon_steps(registry, compile_step=True)
    assert compiled, "the step's functions were not compiled"
    assert graph_breaks() == {}
    for got, expected in zip(stepped, eager):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("paradigm", ["bitflip"])
def test_whole_model_compiles_without_graph_break(
    registry: Registry, paradigm: str, graph_breaks: Callable[[], dict[str, int]]
) -> None:
    """The model ``--compile`` compiles, attention included: a break would split it into per-layer frames,
    each layer's own constants then forcing a recompile until dynamo's limit sends the rest to eager.
    Optical, whose attention is intercepted, is checked by a compiled training run below."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2)
    )
    newcompute.apply(model, [resolve_paradigm(registry, paradigm, TABLES.get(paradigm, {}))], registry=registry)
    model.train().compile(backend="aot_eager")
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    assert graph_breaks() == {}


def test_a_compiled_training_run_traces_its_model_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, graph_breaks: Callable[[], dict[str, int]]
) -> None:
    """The first step runs eagerly, so optical's first-call calibration is not traced and then traced again;
    the whole model, its intercepted attention included, is one graph."""
    compile_module = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda self: compile_module(self, backend="aot_eager"))
    run = RunConfig.model_validate(
        {
            "model": {"name": "tiny", "init": "scratch"},
            "train": {"steps": 3, "batch_size": 2, "micro_batch_size": 2, "block_size": 16, "compile": True,
                      "output_dir": str(tmp_path)},
            "data": {"validation_max_blocks": 1},
            "paradigm": {"optical": {}},
        }
    )
    session = build_session(run, registry=load_registry(), overwrite=True)
    trainer = Trainer(session, RunDisplay(Console(file=io.StringIO()), enabled=False), on_step=None)
    losses = [trainer.train_step().loss for _ in range(3)]
    assert counters["stats"]["unique_graphs"] == 1
    assert graph_breaks() == {}
    assert all(math.isfinite(loss) for loss in losses)
