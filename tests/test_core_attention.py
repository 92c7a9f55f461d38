"""Attention interception through AttentionInterface, for every supported model family."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny
from torch import nn

import newcompute as nc
from newcompute.attention import MATMULS_ATTR, find_attention_modules, record_intercepted

FAMILIES = ["tiny", "tiny-qwen2", "tiny-mistral", "tiny-gpt2", "tiny-gpt-neox", "tiny-opt"]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (2, 12), generator=generator)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0
    return ids, mask


@pytest.mark.parametrize("preset", FAMILIES)
def test_exact_matmuls_reproduce_sdpa_and_reach_every_layer(registry: nc.Registry, preset: str) -> None:
    """With exact products the core's attention must equal the model's own SDPA path, padding included."""
    model = tiny(preset)
    ids, mask = _batch()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
    report = nc.apply(model, ["exact-attn"], registry=registry)
    assert model.config._attn_implementation == "newcompute"
    layers = report.attention["exact-attn"]
    assert len(layers) == model.config.num_hidden_layers
    with torch.no_grad(), record_intercepted() as seen:
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert seen == {id(model.get_submodule(name)) for name in layers}
    torch.testing.assert_close(logits[0], reference[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits[1, 4:], reference[1, 4:], rtol=1e-4, atol=1e-5)
    nc.verify_attention(model)


class CountingMatmuls(nc.AttentionMatmuls):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[torch.Size, torch.Size]] = []

    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        self.shapes.append((query.shape, key.shape))
        return query @ key.transpose(-1, -2)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return probs @ value


class GqaPlugin:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        from conftest import ScaleConfig

        return [nc.Paradigm("count", "records shapes", ScaleConfig, frozenset({nc.Role.ATTENTION}))]

    @nc.hookimpl
    def newcompute_attention_matmuls(self, paradigm, config, name, attention):  # noqa: ANN001, ANN201
        return CountingMatmuls()


def test_grouped_query_keys_are_repeated_before_the_paradigm_sees_them() -> None:
    registry = nc.Registry()
    registry.register(GqaPlugin(), name="gqa")
    model = tiny("tiny")
    assert model.config.num_key_value_heads == 2
    nc.apply(model, ["count"], registry=registry)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 5, dtype=torch.long))
    q_shape, k_shape = getattr(model.model.layers[0].self_attn, MATMULS_ATTR).shapes[0]
    assert q_shape == k_shape == torch.Size([1, 4, 5, 16])


def test_matmul_modules_are_part_of_the_state_dict(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["exact-attn"], registry=registry)
    assert isinstance(model.get_submodule(f"model.layers.0.self_attn.{MATMULS_ATTR}"), nc.AttentionMatmuls)


def test_rules_limit_interception_and_other_layers_keep_sdpa(registry: nc.Registry) -> None:
    from newcompute.config import resolve_paradigm

    model = tiny()
    ids, mask = _batch()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
    report = nc.apply(model, [resolve_paradigm(registry, "exact-attn", {"include": ["model.layers.1.*"]})], registry=registry)
    assert report.attention["exact-attn"] == ["model.layers.1.self_attn"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits[0], reference[0], rtol=1e-4, atol=1e-5)


class NotAnHFModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = MyAttention()


class MyAttention(nn.Module):
    config = None


def test_model_without_attention_interface_gets_an_error_naming_its_class(registry: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match="NotAnHFModel does not route attention through transformers' AttentionInterface"):
        nc.apply(NotAnHFModel(), ["exact-attn"], registry=registry)


def test_model_without_attention_modules_gets_an_error(registry: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match="Sequential has no attention modules"):
        nc.apply(nn.Sequential(nn.Linear(2, 2)), ["exact-attn"], registry=registry)


def test_verify_reports_layers_that_bypass_the_interface(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["exact-attn"], registry=registry)
    model.config._attn_implementation_internal = "sdpa"
    with pytest.raises(nc.RunError, match="not reached for 2 layer"):
        nc.verify_attention(model)


def test_find_attention_modules_names_each_layer() -> None:
    assert [n for n, _ in find_attention_modules(tiny("tiny-gpt2"))] == ["transformer.h.0.attn", "transformer.h.1.attn"]


class WholeAttention(CountingMatmuls):
    """Implements ``attend`` with plain PyTorch, recording the arguments it was offered."""

    def __init__(self) -> None:
        super().__init__()
        self.offers: list[tuple[torch.Size, torch.Size, float, bool]] = []

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool
    ) -> torch.Tensor | None:
        self.offers.append((query.shape, key.shape, scale, causal))
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        scores = (query @ key.transpose(-1, -2)).float() * scale
        if causal:
            q_len, k_len = scores.shape[-2:]
            keep = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
            scores = scores.masked_fill(~keep, float("-inf"))
        return scores.softmax(-1).to(value.dtype) @ value


class WholeAttentionPlugin(GqaPlugin):
    @nc.hookimpl
    def newcompute_attention_matmuls(self) -> nc.AttentionMatmuls:
        return WholeAttention()


def _whole_attention_model() -> tuple[nn.Module, torch.Tensor]:
    registry = nc.Registry()
    registry.register(WholeAttentionPlugin(), name="whole")
    model = tiny("tiny")
    with torch.no_grad():
        reference = model(input_ids=_batch()[0]).logits
    nc.apply(model, ["count"], registry=registry)
    return model, reference


def test_attend_takes_unmasked_causal_attention_with_its_own_key_heads() -> None:
    model, reference = _whole_attention_model()
    with torch.no_grad():
        logits = model(input_ids=_batch()[0]).logits
    matmuls = getattr(model.model.layers[0].self_attn, MATMULS_ATTR)
    assert matmuls.offers == [(torch.Size([2, 4, 12, 16]), torch.Size([2, 2, 12, 16]), 16**-0.5, True)]
    assert matmuls.shapes == []
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)


def test_attend_is_not_offered_a_padding_mask_and_declining_falls_back_to_the_products() -> None:
    model, _ = _whole_attention_model()
    ids, mask = _batch()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    matmuls = getattr(model.model.layers[0].self_attn, MATMULS_ATTR)
    assert matmuls.offers == [] and len(matmuls.shapes) == 1
    matmuls.attend = lambda *args, **kwargs: None  # a paradigm that declines this call
    with torch.no_grad():
        model(input_ids=ids)
    assert len(matmuls.shapes) == 2


def test_attend_is_offered_one_token_queries_as_not_causal() -> None:
    model, _ = _whole_attention_model()
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long))
    matmuls = getattr(model.model.layers[0].self_attn, MATMULS_ATTR)
    assert matmuls.offers[0][3] is False


def test_attend_is_offered_the_full_causal_mask_transformers_builds_while_capturing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under CUDA-graph capture transformers materialises the causal mask; it must still count as plain causal."""
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "_ignore_causal_mask_sdpa", lambda *args, **kwargs: False)
    model, reference = _whole_attention_model()
    ids, mask = _batch()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        model(input_ids=ids, attention_mask=mask)
    matmuls = getattr(model.model.layers[0].self_attn, MATMULS_ATTR)
    assert [offer[3] for offer in matmuls.offers] == [True]
    assert len(matmuls.shapes) == 1
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)


def test_attend_is_offered_traced_calls_only_for_declared_unpacked_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    """Traced, transformers adds a document mask it cannot rule out; the trainer's declaration rules it out."""
    import transformers.masking_utils as masking

    from newcompute.attention import unpacked_sequences

    monkeypatch.setattr(masking, "is_tracing", lambda *args, **kwargs: True)
    model, reference = _whole_attention_model()
    ids = _batch()[0]
    matmuls = getattr(model.model.layers[0].self_attn, MATMULS_ATTR)
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
        assert matmuls.offers == [] and len(matmuls.shapes) == 1
        with unpacked_sequences():
            logits = model(input_ids=ids, use_cache=False).logits
    assert len(matmuls.offers) == 1 and len(matmuls.shapes) == 1
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)
