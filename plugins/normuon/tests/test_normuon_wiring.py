"""From a model to parameter groups: classification, overrides, fused matrices, bad configs."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch
from normuon_helpers import registry
from pydantic import BaseModel
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import newcompute
from newcompute import ConfigError, MissingDependency, OptimizerSettings, ReplacedLinear, Role
from newcompute.config import resolve_paradigm
from newcompute_normuon import NorMuonAdamW, NorMuonConfig, build_groups

SETTINGS = OptimizerSettings(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-7)


def _llama() -> torch.nn.Module:
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))


def _gpt2() -> torch.nn.Module:
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                                      bos_token_id=0, eos_token_id=0))


def _qwen2() -> torch.nn.Module:
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))


def _build(model: torch.nn.Module, table: dict | None = None, paradigms: tuple = ()) -> NorMuonAdamW:
    reg = registry()
    for extra in paradigms:
        reg.register(extra, name=extra.__name__)
    use = resolve_paradigm(reg, "normuon", table or {})
    newcompute.apply(model, [*[p.__name__ for p in paradigms], use], registry=reg)
    optimizer = newcompute.build_optimizer(model, SETTINGS, registry=reg)
    assert isinstance(optimizer, NorMuonAdamW)
    return optimizer


def _routes(optimizer: NorMuonAdamW) -> dict[str, dict]:
    return {name: group for group in optimizer.param_groups for name in group["param_names"]}


def _matrix_suffixes(family: str) -> tuple[str, ...]:
    if family == "gpt2":
        return ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    return tuple(f"{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_hidden_matrices_get_normuon_everything_else_adamw(family: str) -> None:
    model = {"llama": _llama, "gpt2": _gpt2, "qwen2": _qwen2}[family]()
    routes = _routes(_build(model))
    assert set(routes) == {n for n, p in model.named_parameters() if p.requires_grad}
    normuon = {n for n, g in routes.items() if g["optimizer"] == "normuon"}
    assert normuon == {n for n in routes if n.endswith(_matrix_suffixes(family))}
    assert len(normuon) == 2 * len(_matrix_suffixes(family))
    for name, group in routes.items():
        if group["optimizer"] == "normuon":
            assert (group["lr"], group["momentum"], group["beta2"]) == (0.02, 0.95, 0.95)
            assert group["weight_decay"] == SETTINGS.weight_decay
            assert group["transposed"] is (family == "gpt2")
        else:
            assert (group["lr"], group["betas"], group["eps"]) == (1e-3, (0.9, 0.98), 1e-7)
            head = name == "lm_head.weight" and family == "llama"
            assert group["weight_decay"] == (SETTINGS.weight_decay if head else 0.0), name


def test_qwen2_attention_biases_and_tied_head_use_adamw() -> None:
    routes = _routes(_build(_qwen2()))
    assert routes["model.layers.0.self_attn.q_proj.bias"]["optimizer"] == "adamw"
    assert routes["model.embed_tokens.weight"]["name"] == "adamw (no decay)"
    assert "lm_head.weight" not in routes


class _Doubled(ReplacedLinear):
    """A stand-in layer paradigm: replaces every linear layer, computes 2·(x·Wᵀ + b)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.nn.functional.linear(x, self.weight_out_in(), self.bias)


class _NoOptions(BaseModel):
    pass


def _doubling_plugin() -> types.ModuleType:
    plugin = types.ModuleType("doubled")

    @newcompute.hookimpl
    def newcompute_register_paradigms() -> list[newcompute.Paradigm]:
        return [newcompute.Paradigm("doubled", "test layers", _NoOptions, frozenset({Role.LAYER}))]

    @newcompute.hookimpl
    def newcompute_replace_layer(paradigm, config, name, module):
        return _Doubled(module) if newcompute.is_linear_like(module) else None

    plugin.newcompute_register_paradigms = newcompute_register_paradigms
    plugin.newcompute_replace_layer = newcompute_replace_layer
    return plugin


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_composes_with_a_layer_paradigm(family: str) -> None:
    """Replaced layers keep their parameters, so NorMuon trains them whatever their new class."""
    model = {"llama": _llama, "gpt2": _gpt2}[family]()
    optimizer = _build(model, paradigms=(_doubling_plugin(),))
    assert sum(isinstance(m, _Doubled) for m in model.modules()) == 2 * len(_matrix_suffixes(family))
    routes = _routes(optimizer)
    normuon = {n for n, g in routes.items() if g["optimizer"] == "normuon"}
    assert normuon == {n for n in routes if n.endswith(_matrix_suffixes(family))}
    tokens = torch.randint(0, 64, (2, 8))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in normuon)


class _Odd(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = torch.nn.Parameter(torch.randn(2, 3, 4))
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.proj = torch.nn.Linear(4, 4)


def _infos(model: torch.nn.Module) -> list[newcompute.ParamInfo]:
    return newcompute.classify_parameters(model)


def test_one_and_three_dimensional_tensors_go_to_adamw_by_default() -> None:
    groups = build_groups(NorMuonConfig(), _infos(_Odd()), SETTINGS)
    routes = {name: g["optimizer"] for g in groups for name, _ in g["params"]}
    assert routes == {"kernel": "adamw", "gain": "adamw", "proj.weight": "normuon", "proj.bias": "adamw"}


def test_overrides_apply_in_order_field_by_field() -> None:
    config = NorMuonConfig.model_validate({"overrides": [
        {"pattern": "kernel", "optimizer": "normuon"},
        {"pattern": "proj.*", "lr": 0.5, "betas": [0.8, 0.9]},
        {"pattern": "proj.weight", "weight_decay": 0.0, "betas": [0.7, 0.6]},
        {"pattern": "proj.bias", "optimizer": "adamw", "weight_decay": 0.2},
    ]})
    groups = {name: g for g in build_groups(config, _infos(_Odd()), SETTINGS) for name, _ in g["params"]}
    assert groups["kernel"]["optimizer"] == "normuon" and groups["kernel"]["lr"] == 0.02
    weight = groups["proj.weight"]
    assert (weight["optimizer"], weight["lr"], weight["momentum"], weight["beta2"], weight["weight_decay"]) == (
        "normuon", 0.5, 0.7, 0.6, 0.0)
    bias = groups["proj.bias"]
    assert (bias["optimizer"], bias["lr"], bias["betas"], bias["weight_decay"]) == ("adamw", 0.5, (0.8, 0.9), 0.2)


def test_override_patterns_match_like_layer_rules_and_a_bad_regex_names_itself() -> None:
    config = NorMuonConfig.model_validate({"overrides": [{"pattern": r"re:proj\.(weight|bias)", "lr": 0.5}]})
    groups = {name: g for g in build_groups(config, _infos(_Odd()), SETTINGS) for name, _ in g["params"]}
    assert groups["proj.weight"]["lr"] == groups["proj.bias"]["lr"] == 0.5
    assert groups["kernel"]["lr"] != 0.5
    with pytest.raises(ValueError, match=r"'re:\(' is not a valid regular expression"):
        NorMuonConfig.model_validate({"fused": [{"pattern": "re:(", "splits": 3}]})


def test_a_forced_three_dimensional_matrix_is_flattened_and_trains() -> None:
    model = _Odd()
    config = NorMuonConfig(overrides=({"pattern": "kernel", "optimizer": "normuon"},), ns_dtype="float32")
    optimizer = NorMuonAdamW(build_groups(config, _infos(model), SETTINGS))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert optimizer.state[model.kernel]["second_moment"].shape == (2,)


def test_fused_splits_and_explicit_weight_decay() -> None:
    model = _gpt2()
    optimizer = _build(model, {"fused": [{"pattern": "*.attn.c_attn.weight", "splits": 3}], "weight_decay": 0.3})
    routes = _routes(optimizer)
    assert routes["transformer.h.1.attn.c_attn.weight"]["splits"] == 3
    assert routes["transformer.h.1.attn.c_attn.weight"]["name"] == "normuon (matrices, Conv1D, out×in, fused 3)"
    assert routes["transformer.h.1.mlp.c_fc.weight"]["splits"] is None
    assert routes["transformer.h.1.mlp.c_fc.weight"]["weight_decay"] == 0.3


def test_defaults_on_cpu_are_eager_torch_kernels() -> None:
    optimizer = _build(_llama())
    ops = optimizer.ops
    assert (ops.compiled, ops.symmetric) == (False, False)
    assert ops.elementwise == "auto" and not ops.fuses(torch.device("cpu")) and not optimizer.overlap
    assert ops.fuses(torch.device("cuda")) == (importlib.util.find_spec("triton") is not None)
    assert not _build(_llama(), {"compile": True}).ops.fuses(torch.device("cuda"))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed (the gpu extra)")
def test_triton_kernels_are_chosen_when_asked() -> None:
    assert _build(_llama(), {"compile": True, "ns_kernel": "triton"}).ops.symmetric is True
    assert _build(_llama(), {"elementwise": "triton"}).ops.fuses(torch.device("cpu"))


@pytest.mark.parametrize("option", ["ns_kernel", "elementwise"])
def test_asking_for_triton_without_it_names_the_plugin_and_the_extra(
    option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=f"newcompute-normuon: {option} = 'triton' needs the 'triton' package") as err:
        _build(_llama(), {option: "triton"})
    assert "pip install 'newcompute-normuon[gpu]'" in str(err.value)


def test_the_kernel_package_without_triton_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)
    for name in [m for m in sys.modules if m.startswith("newcompute_normuon.kernels")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingDependency, match="newcompute-normuon: the 'triton' package is not installed; the NorMuon Triton kernels"):
        importlib.import_module("newcompute_normuon.kernels.elementwise")


def test_elementwise_and_overlap_reach_the_optimizer() -> None:
    optimizer = _build(_llama(), {"elementwise": "torch", "overlap": True})
    assert not optimizer.ops.fuses(torch.device("cuda")) and optimizer.overlap


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"overrides": [{"pattern": "*.q_porj.weight", "lr": 0.1}]}, "matches no trainable parameter.*q_proj"),
        ({"overrides": [{"pattern": "*.input_layernorm.weight", "optimizer": "normuon"}]},
         "'model.layers.0.input_layernorm.weight' has shape \\(32,\\)"),
        ({"fused": [{"pattern": "*.q_proj.weight", "splits": 3}]}, "32 output rows, which do not split into 3"),
        ({"fused": [{"pattern": "*.q_proj.weight", "splits": [16, 8]}]}, "summing to its 32 output rows"),
        ({"fused": [{"pattern": "lm_head.weight", "splits": 2}]}, "trained with AdamW"),
        ({"fused": [{"pattern": "nothing", "splits": 2}]}, "fused: pattern 'nothing' matches no"),
    ],
)
def test_bad_configs_name_the_parameter(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _build(_llama(), table)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"momentm": 0.9}, "unknown key 'momentm'. Did you mean 'momentum'"),
        ({"overrides": [{"pattern": "x", "betas": [0.9, 1.0]}]}, "each beta must be in \\[0, 1\\)"),
        ({"ns_steps": 0}, "'ns_steps'"),
        ({"coefficients": "cubic"}, "'coefficients'"),
        ({"elementwise": "cuda"}, "'elementwise'"),
    ],
)
def test_invalid_tables_are_config_errors(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_paradigm(registry(), "normuon", table)


def test_registered_through_the_entry_point() -> None:
    loaded = newcompute.load_registry()
    assert loaded.get("normuon").roles == frozenset({Role.OPTIMIZER})
    record = next(r for r in loaded.records if "normuon" in r.paradigms)
    assert record.status == "ok" and record.distribution == "newcompute-normuon"
