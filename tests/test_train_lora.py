"""LoRA through PEFT on top of paradigm layers: adapters train, the paradigm still computes the base product."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from test_train_paradigms import Int8ishLinear, make_registry, quiet, tiny_run

from newcompute.models import load_model
from newcompute.train import train
from newcompute.train.evaluation import evaluate_model, load_run_for_eval

PARADIGMS = {"int8ish": {}, "noisy-attention": {}}


def test_lora_trains_adapters_around_paradigm_layers_and_reloads_exactly(tmp_path: Path) -> None:
    registry = make_registry()
    run = tiny_run(tmp_path, PARADIGMS, steps=6, lora=True, lora_rank=4, lr=1e-2)
    result = train(run, registry, console=quiet())
    assert result.losses[6] < result.losses[1]

    target = load_run_for_eval(tmp_path, registry=registry)
    wrapped = target.model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert isinstance(wrapped.base_layer, Int8ishLinear)
    assert wrapped.lora_A["default"].weight.shape == (4, 64)
    assert evaluate_model(target) == result.final
    assert json.loads((tmp_path / "summary.json").read_text())["final_val_loss"] == result.final.loss

    # Only the adapters moved: the base weights are still the scratch initialisation of seed 0.
    base = load_file(tmp_path / "model.safetensors")
    initial = load_model(run.model, seed=0).model.state_dict()
    assert set(initial) <= set(base)
    assert all(torch.equal(base[name], initial[name]) for name in initial)
    adapters = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert len([n for n in adapters if "lora_B" in n]) == 14
    assert any(adapters[n].abs().max() > 0 for n in adapters if "lora_B" in n)


def test_telemetry_under_lora_reports_every_paradigm_layer_under_its_own_name(tmp_path: Path) -> None:
    """PEFT wraps each layer (``….base_layer``) and forwards attributes: records still name the layers."""
    from newcompute.composer import report_of
    from newcompute.plugins import get_registry
    from newcompute.train.metrics import read_metrics

    run = tiny_run(tmp_path, {"optical": {}}, steps=2, lora=True, telemetry_every=1, telemetry_error=True)
    train(run, get_registry(), console=quiet())
    records = [r for r in read_metrics(tmp_path) if r["kind"] == "telemetry"]
    replaced = set(report_of(load_run_for_eval(tmp_path).model.get_base_model()).replaced)
    linear = {r["layer"]: r for r in records if r["step"] == 2 and r["layer"] in replaced}
    assert set(linear) == replaced and all(r["paradigm"] == "optical" for r in linear.values())
    for record in linear.values():
        assert {"readout_clip_rate", "input_range_use", "relative_error", "cosine"} <= set(record["statistics"])
    assert not [r for r in records if r["layer"].endswith("base_layer") or not r["paradigm"]]
