"""Parameter classification for optimizer wiring, across families and after replacement."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import tiny

import newcompute as nc


def kinds(model) -> Counter[str]:  # noqa: ANN001
    return Counter(info.kind.value for info in nc.classify_parameters(model))


def test_llama_parameters_by_kind() -> None:
    assert kinds(tiny()) == {"hidden_matrix": 14, "embedding": 1, "output_head": 1, "norm": 5}


def test_gpt2_tied_head_is_one_embedding_and_conv1d_weights_are_matrices() -> None:
    infos = nc.classify_parameters(tiny("tiny-gpt2"))
    by_name = {i.name: i for i in infos}
    assert by_name["transformer.h.0.attn.c_attn.weight"].kind is nc.ParamKind.HIDDEN_MATRIX
    assert by_name["transformer.h.0.attn.c_attn.weight"].source_type == "Conv1D"
    assert by_name["transformer.h.0.attn.c_attn.bias"].kind is nc.ParamKind.BIAS
    assert by_name["transformer.wte.weight"].kind is nc.ParamKind.EMBEDDING
    assert by_name["transformer.wpe.weight"].kind is nc.ParamKind.EMBEDDING
    assert not any(i.kind is nc.ParamKind.OUTPUT_HEAD for i in infos)
    assert kinds(tiny("tiny-gpt2"))["norm"] == 2 * 2 * 2 + 2


@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-opt", "tiny-gpt-neox"])
def test_every_trainable_parameter_is_classified_once(preset: str) -> None:
    model = tiny(preset)
    infos = nc.classify_parameters(model)
    unique = {id(p) for p in model.parameters()}
    assert len(infos) == len(unique)
    assert {id(i.param) for i in infos} == unique


def test_classification_survives_replacement(registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["scale"], registry=registry)
    infos = nc.classify_parameters(model)
    q = next(i for i in infos if i.name == "model.layers.0.self_attn.q_proj.weight")
    assert (q.kind, q.module_type, q.source_type) == (nc.ParamKind.HIDDEN_MATRIX, "ScaledLinear", "Linear")
    assert kinds(model) == kinds(tiny())


def test_frozen_parameters_are_left_out() -> None:
    model = tiny()
    model.model.embed_tokens.weight.requires_grad_(False)
    assert "embedding" not in kinds(model)
