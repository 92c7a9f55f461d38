"""The plugin as users meet it: registration, recipes, per-layer rules, what is left alone, bad input."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import newcompute
from newcompute import ConfigError, MissingDependency, Registry, load_registry
from newcompute.config import resolve_paradigm
from newcompute_mx import plugin
from newcompute_mx.layer import QuantizedLinear

LLAMA = LlamaConfig(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=64,
)
NAMES = ["mxfp8", "mxfp8-e5m2", "mxfp6", "mxfp6-e2m3", "mxfp4", "mxint8", "fp8"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = Registry()
    record = registry.register(plugin, name="mx")
    assert record.status == "ok", record.error
    return registry


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LLAMA)


def apply(registry: Registry, name: str, table: dict[str, Any] | None = None) -> tuple[Any, newcompute.ComposeReport]:
    model = llama()
    report = newcompute.apply(model, [resolve_paradigm(registry, name, dict(table or {}))], registry=registry)
    return model, report


def test_entry_point_registers_every_paradigm() -> None:
    record = next(r for r in load_registry().records if r.name == "mx")
    assert record.status == "ok", record.error
    assert record.paradigms == NAMES


def test_recipes_are_the_defaults(registry: Registry) -> None:
    defaults = {name: registry.get(name).default_config() for name in NAMES}
    mxfp8 = defaults["mxfp8"]
    assert (mxfp8.fwd_input, mxfp8.fwd_weight, mxfp8.dgrad_weight, mxfp8.wgrad_input) == ("e4m3",) * 4
    assert (mxfp8.dgrad_grad_output, mxfp8.wgrad_grad_output) == ("e5m2", "e5m2")
    assert (mxfp8.block_size, mxfp8.scale_mode, mxfp8.attention) == (32, "floor", False)
    assert set(defaults["mxfp8-e5m2"].role_formats("x").values()) == {"e5m2"}
    assert set(defaults["mxfp6"].role_formats("x").values()) == {"e3m2"}
    assert set(defaults["mxfp6-e2m3"].role_formats("x").values()) == {"e2m3"}
    assert set(defaults["mxint8"].role_formats("x").values()) == {"int8"}
    mxfp4 = defaults["mxfp4"].role_formats("x")
    assert (mxfp4["fwd_weight"], mxfp4["dgrad_weight"], mxfp4["fwd_input"], mxfp4["dgrad_grad_output"]) == (
        "e2m1",
        "e2m1",
        "e3m2",
        "e3m2",
    )
    fp8 = defaults["fp8"]
    assert (fp8.scaling, fp8.amax_history_len, fp8.amax_compute, fp8.margin) == ("delayed", 1024, "max", 0)


def test_only_decoder_linears_are_replaced(registry: Registry) -> None:
    plain_keys = list(llama().state_dict())
    model, report = apply(registry, "mxfp8")
    replaced = {name for name, module in model.named_modules() if isinstance(module, QuantizedLinear)}
    assert len(replaced) == 2 * 7 and all(".self_attn." in n or ".mlp." in n for n in replaced)
    assert type(model.lm_head).__name__ == "Linear"
    assert type(model.model.embed_tokens).__name__ == "Embedding"
    assert type(model.model.layers[0].input_layernorm).__name__ == "LlamaRMSNorm"
    assert report.attention == {}
    assert list(model.state_dict()) == plain_keys
    llama().load_state_dict(model.state_dict(), strict=True)


def test_per_layer_overrides_and_core_rules(registry: Registry) -> None:
    table = {
        "layers": [
            {"match": ["*.mlp.down_proj"], "dgrad_grad_output": "none", "wgrad_grad_output": "none"},
            {"match": ["re:.*layers\\.1\\.self_attn\\.[qk]_proj"], **dict.fromkeys(plugin.ROLES, "none")},
        ],
        "exclude": ["lm_head", "*.v_proj"],
    }
    model, _ = apply(registry, "mxfp8", table)
    layer0, layer1 = model.model.layers
    assert layer0.mlp.down_proj.quantizer.formats["dgrad_grad_output"] == "none"
    assert layer0.mlp.down_proj.quantizer.formats["fwd_input"] == "e4m3"
    assert layer0.mlp.up_proj.quantizer.formats["dgrad_grad_output"] == "e5m2"
    assert isinstance(layer0.self_attn.q_proj, QuantizedLinear)
    assert type(layer1.self_attn.q_proj).__name__ == "Linear"  # every role "none": left alone
    assert type(layer0.self_attn.v_proj).__name__ == "Linear"  # excluded by the core's rules


def test_attention_quantization_is_opt_in(registry: Registry) -> None:
    for name in ("mxfp6", "fp8"):
        model, report = apply(registry, name, {"attention": True})
        assert len(report.attention[name]) == LLAMA.num_hidden_layers
        newcompute.verify_attention(model)
        ids = torch.randint(0, 128, (2, 16))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        assert torch.isfinite(loss) and model.model.layers[0].self_attn.q_proj.weight.grad is not None


def test_the_routing_check_starts_no_collective(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's routing check runs on CPU, where an NCCL process group cannot all-reduce an amax."""

    def no_collective(*args: object, **kwargs: object) -> None:
        raise AssertionError("the routing check reached a collective")

    model, _ = apply(registry, "fp8", {"attention": True})
    model.eval()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", no_collective)
    newcompute.verify_attention(model)


def test_gpt2_conv1d_layers_are_replaced(registry: Registry) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64))
    report = newcompute.apply(model, [resolve_paradigm(registry, "mxint8", {})], registry=registry)
    assert report.to_dict()["replaced"] == [{"paradigm": "mxint8", "from": "Conv1D", "to": "QuantizedLinear", "count": 8}]
    ids = torch.randint(0, 128, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad.shape == (64, 256)


def test_fp8_history_is_saved_with_the_model(registry: Registry) -> None:
    model, _ = apply(registry, "fp8")
    ids = torch.randint(0, 128, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    history = model.model.layers[0].mlp.up_proj.quantizer.history.amax_history
    assert history.shape == (3, 1024) and history.device == model.model.layers[0].mlp.up_proj.weight.device
    assert (history[:, 0] > 0).all() and (history[:, 1:] == 0).all()
    key = "model.layers.0.mlp.up_proj.quantizer.history.amax_history"
    assert torch.equal(model.state_dict()[key], history)


def test_fp8_state_is_created_on_the_device_of_the_layer_it_replaces(registry: Registry) -> None:
    """A model moved to a GPU before it is transformed keeps every FP8 history beside its weights
    (the meta device stands in for the GPU here: buffers made on the CPU would show as cpu)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LLAMA)
    newcompute.apply(model, [resolve_paradigm(registry, "fp8", {"attention": True})], registry=registry)
    histories = {name: buffer.device.type for name, buffer in model.named_buffers() if name.endswith("amax_history")}
    assert len(histories) == 2 * (7 + 1) and set(histories.values()) == {"meta"}, histories


def test_evaluation_without_autograd_equals_the_training_forward(registry: Registry) -> None:
    model, _ = apply(registry, "mxfp8")
    ids = torch.randint(0, 128, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_logits = model(input_ids=ids).logits
        with torch.no_grad():
            eval_logits = model(input_ids=ids).logits
    assert torch.equal(train_logits, eval_logits)


@pytest.mark.parametrize(
    ("name", "table", "expected"),
    [
        ("mxfp8", {"fwd_input": "e9m9"}, ["fwd_input", "'e4m3'", "'none'"]),
        ("mxfp4", {"block_size": 48}, ["block_size", "power of two", "got 48"]),
        ("mxfp8", {"scale_mode": "round"}, ["scale_mode", "'floor'", "'ceil'"]),
        ("fp8", {"dgrad_grad_output": "e2m1"}, ["per-tensor FP8 supports only", "dgrad_grad_output='e2m1'"]),
        ("fp8", {"layers": [{"match": ["*"], "fwd_input": "int8"}]}, ["layers[0].fwd_input='int8'"]),
        ("mxfp8", {"layers": [{"match": ["re:("], "fwd_input": "none"}]}, ["not a valid regular expression"]),
        ("mxfp8", {"fwd_inputs": "e4m3"}, ["fwd_inputs", "Did you mean 'fwd_input'"]),
    ],
)
def test_bad_configuration_names_the_field_and_what_is_valid(
    registry: Registry, name: str, table: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_paradigm(registry, name, table)
    for fragment in expected:
        assert fragment in str(error.value)


def test_without_triton_the_kernels_name_the_plugin_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # as on a machine without Triton
    monkeypatch.delitem(sys.modules, "newcompute_mx.kernels", raising=False)
    with pytest.raises(MissingDependency, match=r"^newcompute-mx: the 'triton' package is not installed; the MX") as err:
        importlib.import_module("newcompute_mx.kernels")
    assert str(err.value).endswith("Install it with: pip install 'newcompute-mx[gpu]'.")
