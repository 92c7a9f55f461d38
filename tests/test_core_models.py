"""Model presets and loading: embedded architectures, local folders, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import newcompute as nc
from newcompute.config import ModelSettings
from newcompute.models import load_model, parameter_count
from newcompute.presets import torchtitan_mlp_width

PRESETS = nc.Registry().presets

CLM_TABLE = {
    "clm-60m": (384, 22, 6, 2, 1408),
    "clm-200m": (768, 24, 12, 4, 2688),
    "clm-400m": (960, 30, 15, 5, 3328),
    "clm-600m": (1152, 32, 18, 6, 4096),
    "clm-1.1b": (1536, 32, 24, 8, 5376),
}


@pytest.mark.parametrize("name", list(CLM_TABLE))
def test_clm_presets_match_the_newcomputebench_table(name: str) -> None:
    """Values from NewComputeBench's model_flavors (shared/reference/models.md)."""
    dim, layers, heads, kv_heads, mlp = CLM_TABLE[name]
    config = PRESETS[name].build_config()
    assert (config.hidden_size, config.num_hidden_layers) == (dim, layers)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (heads, kv_heads, 64)
    assert config.intermediate_size == torchtitan_mlp_width(dim) == mlp
    assert config.vocab_size == 49152 and PRESETS[name].hub_id == f"AICrossSim/{name}"


def test_clm_60m_parameter_count_is_the_published_size() -> None:
    with torch.device("meta"):
        model = load_model(ModelSettings(name="clm-60m", init="scratch")).model
    total = parameter_count(model)
    embedding = model.get_input_embeddings().weight.numel()
    assert abs(total - 82e6) / 82e6 < 0.01
    assert abs(total - embedding - 63e6) / 63e6 < 0.01


def test_scratch_is_seeded_and_says_what_was_used() -> None:
    first = load_model(ModelSettings(name="tiny", init="scratch"), seed=3)
    second = load_model(ModelSettings(name="tiny", init="scratch"), seed=3)
    assert "random weights" in first.source and "byte-level" in first.tokenizer_source
    torch.testing.assert_close(first.model.lm_head.weight, second.model.lm_head.weight, rtol=0, atol=0)


def test_local_folder_loads_weights_and_tokenizer(tmp_path: Path) -> None:
    saved = load_model(ModelSettings(name="tiny-qwen2", init="scratch"), seed=1)
    saved.model.save_pretrained(tmp_path)
    saved.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(ModelSettings(name=str(tmp_path)))
    assert loaded.init == "pretrained" and str(tmp_path) in loaded.source
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM"
    for (name, a), (_, b) in zip(saved.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert loaded.tokenizer("abc")["input_ids"] == [97, 98, 99]


def test_local_folder_with_config_only_builds_from_scratch_and_says_so(tmp_path: Path) -> None:
    PRESETS["tiny"].build_config().save_pretrained(tmp_path)
    loaded = load_model(ModelSettings(name=str(tmp_path)))
    assert loaded.init == "scratch" and "since it holds no weights" in loaded.source
    assert "no tokenizer found" in loaded.tokenizer_source
    with pytest.raises(nc.ConfigError, match="has no weights"):
        load_model(ModelSettings(name=str(tmp_path), init="pretrained"))


def test_bad_model_names_are_clear(tmp_path: Path) -> None:
    with pytest.raises(nc.ConfigError, match="has no config.json"):
        load_model(ModelSettings(name=str(tmp_path)))
    with pytest.raises(nc.ConfigError, match="has no published weights"):
        load_model(ModelSettings(name="tiny", init="pretrained"))
