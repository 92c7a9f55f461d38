"""Composing paradigms: rules, conflicts, Conv1D, heads, reports, re-application and the meta device."""

from __future__ import annotations

import pytest
import torch
from conftest import ScaledLinear, tiny

import newcompute as nc
from newcompute.config import resolve_paradigm
from newcompute.layers import ReplacedLinear


def use(registry: nc.Registry, name: str, **table: object) -> nc.ParadigmUse:
    return resolve_paradigm(registry, name, dict(table))


def test_per_layer_rules_split_modules_between_paradigms(registry: nc.Registry) -> None:
    model = tiny()
    report = nc.apply(
        model,
        [use(registry, "scale", include=["*.mlp.*"]), use(registry, "scale2", include=["*.self_attn.*"], factor=3.0)],
        registry=registry,
    )
    owners = report.replaced
    assert {n for n, p in owners.items() if p == "scale"} == {
        f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")
    }
    assert {n for n, p in owners.items() if p == "scale2"} == {
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    assert model.get_submodule("model.layers.1.self_attn.o_proj").factor == 3.0
    assert report.replaced_types == {("scale", "Linear", "ScaledLinear"): 6, ("scale2", "Linear", "ScaledLinear"): 8}


def test_two_paradigms_claiming_one_module_is_an_error_naming_both(registry: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match=r"'model\.layers\.0\.self_attn\.q_proj' is claimed by both paradigms 'scale' and 'scale2'"):
        nc.apply(tiny(), ["scale", "scale2"], registry=registry)


def test_two_optimizer_paradigms_are_refused(registry: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match="'sgd' and 'sgd2' both build the optimizer"):
        nc.apply(tiny(), ["sgd", "sgd2"], registry=registry)


@pytest.mark.parametrize(("preset", "head"), [("tiny", "lm_head"), ("tiny-gpt-neox", "lm_head"), ("tiny-opt", "lm_head")])
def test_output_head_is_excluded_by_default_whatever_its_name(registry: nc.Registry, preset: str, head: str) -> None:
    model = tiny(preset)
    report = nc.apply(model, ["scale"], registry=registry)
    assert head not in report.replaced
    assert not isinstance(model.get_submodule(head), ReplacedLinear)


def test_head_is_replaced_when_the_rules_include_it(registry: nc.Registry) -> None:
    model = tiny()
    report = nc.apply(model, [use(registry, "scale", include=["lm_head"], exclude=[])], registry=registry)
    assert list(report.replaced) == ["lm_head"]


def test_regex_rules_and_exclusion_win(registry: nc.Registry) -> None:
    report = nc.apply(
        tiny(), [use(registry, "scale", include=[r"re:.*\.(q|k)_proj"], exclude=["model.layers.1.*"])], registry=registry
    )
    assert sorted(report.replaced) == ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj"]


def test_conv1d_replacement_keeps_parameters_and_numerics(registry: nc.Registry) -> None:
    model = tiny("tiny-gpt2")
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    report = nc.apply(model, ["scale"], registry=registry)
    assert report.replaced_types == {("scale", "Conv1D", "ScaledLinear"): 8}
    layer = model.get_submodule("transformer.h.0.attn.c_attn")
    assert layer.weight_transposed and (layer.in_features, layer.out_features) == (64, 192)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    state = model.state_dict()
    for key, value in weights_before.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_scaling_paradigm_changes_outputs_exactly_as_defined(registry: nc.Registry) -> None:
    model = tiny()
    layer = model.get_submodule("model.layers.0.mlp.down_proj")
    x = torch.randn(3, layer.in_features)
    expected = layer(x) * 2.5
    nc.apply(model, [use(registry, "scale", factor=2.5)], registry=registry)
    torch.testing.assert_close(model.get_submodule("model.layers.0.mlp.down_proj")(x), expected)


def test_applying_twice_is_refused(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["scale"], registry=registry)
    with pytest.raises(nc.ConfigError, match="already transformed by newcompute \\(paradigms: scale\\)"):
        nc.apply(model, ["scale2"], registry=registry)


def test_replacing_a_replacement_directly_is_a_type_error() -> None:
    layer = ScaledLinear(torch.nn.Linear(4, 4), 1.0)
    with pytest.raises(TypeError, match="already a newcompute replacement"):
        ScaledLinear(layer, 1.0)


def test_meta_device_model_is_transformed_without_materialising(registry: nc.Registry) -> None:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(registry.presets["clm-1.1b"].build_config())
    report = nc.apply(model, ["scale", "exact-attn"], registry=registry)
    assert sum(report.replaced_types.values()) == 32 * 7
    assert len(report.attention["exact-attn"]) == 32
    assert all(p.is_meta for p in model.parameters())
    assert all(b.is_meta for b in model.buffers())


def test_report_records_optimizer_groups(registry: nc.Registry) -> None:
    model = tiny()
    report = nc.apply(model, ["scale", "sgd"], registry=registry)
    optimizer = nc.build_optimizer(model, nc.OptimizerSettings(lr=0.1), registry=registry)
    assert isinstance(optimizer, torch.optim.SGD)
    rows = {row["group"]: row for row in report.optimizer_groups}
    assert rows["matrices"]["kinds"] == {"hidden_matrix": 14}
    assert rows["rest"]["kinds"] == {"embedding": 1, "norm": 5, "output_head": 1}
    assert report.to_dict()["optimizer"] == "sgd"


def test_default_optimizer_is_adamw_without_decay_on_norms_and_embeddings(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["scale"], registry=registry)
    optimizer = nc.build_optimizer(model, nc.OptimizerSettings(lr=1e-3, weight_decay=0.1), registry=registry)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert any(p is model.model.embed_tokens.weight for p in plain["params"])
    assert any(p is model.lm_head.weight for p in decayed["params"])
