"""The optical config: defaults, NewComputeBench files accepted unchanged, clear errors."""

from __future__ import annotations

from pathlib import Path

import sys

import pytest
import tomli_w
from optical_support import registry

from newcompute import ConfigError
from newcompute.config import resolve_paradigm
from newcompute_optical import OpticalConfig, load_newcomputebench_config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# The layout of NewComputeBench's experiments/llm-optical-transformer/*/transform_cfg.toml
NEWCOMPUTEBENCH_FULL = """\
use_lora=false
[attention]
    q_levels=256
    q_lut_min=0.020040
    q_smooth_factor=0.9
    q_init_seed=0
    q_bypass=false

[fc]
    q_levels=256
    q_lut_min=0.020040
    q_smooth_factor=0.9
    q_init_seed=0
    q_bypass=false
"""

NEWCOMPUTEBENCH_LORA = NEWCOMPUTEBENCH_FULL.replace("use_lora=false", "use_lora=true") + """
[lora]
    r=32
    lora_alpha=32
"""


def test_defaults_are_newcomputebench_values() -> None:
    config = OpticalConfig()
    for section in (config.attention, config.fc):
        assert (section.q_levels, section.q_lut_min, section.q_smooth_factor) == (256, 0.020040, 0.9)
        assert (section.q_init_seed, section.q_bypass, section.q_quantiles) == (0, False, (0.0, 1.0))
    assert config.use_lora is False


@pytest.mark.parametrize("text", [NEWCOMPUTEBENCH_FULL, NEWCOMPUTEBENCH_LORA], ids=["full", "lora"])
def test_newcomputebench_files_validate_unchanged(tmp_path: Path, text: str) -> None:
    path = tmp_path / "transform_cfg.toml"
    path.write_text(text)
    config = load_newcomputebench_config(path)
    # NewComputeBench's linear layers range over the (0.001, 0.999) quantiles (mase-triton's from_linear
    # default); its attention products over min and max, as newcompute's defaults do.
    assert config.fc == OpticalConfig().fc.model_copy(update={"q_quantiles": (0.001, 0.999)})
    assert config.attention == OpticalConfig().attention
    assert config.use_lora is ("use_lora=true" in text)


def test_mase_triton_spellings_of_off_are_accepted_and_mean_the_same() -> None:
    config = OpticalConfig.model_validate({"fc": {"q_lut_min": None, "q_quantiles": None}})
    assert config.fc.lut_min() is None and config.fc.quantiles() is None
    assert OpticalConfig().fc.lut_min() == 0.020040


def test_the_validated_table_survives_a_toml_round_trip() -> None:
    use = resolve_paradigm(registry(), "optical", {"fc": {"q_quantiles": [0.01, 0.99]}, "attention": {"q_lut_min": 0}})
    text = tomli_w.dumps(use.to_table())
    again = resolve_paradigm(registry(), "optical", tomllib.loads(text))
    assert again.config == use.config


def test_the_same_table_validates_as_a_run_file_paradigm_section() -> None:
    use = resolve_paradigm(registry(), "optical", {"fc": {"q_levels": 64}, "exclude": ["lm_head"]})
    assert use.config.fc.q_levels == 64
    assert use.rules.exclude == ("lm_head",)


@pytest.mark.parametrize(
    ("table", "mentions"),
    [
        ({"fc": {"q_level": 8}}, "fc.q_level"),
        ({"fc": {"q_levels": 1}}, "fc.q_levels"),
        ({"attention": {"q_quantiles": [0.9, 0.1]}}, "attention.q_quantiles"),
        ({"attention": {"q_smooth_factor": 1.5}}, "attention.q_smooth_factor"),
        ({"mlp": {}}, "mlp"),
    ],
)
def test_bad_values_name_the_field(table: dict, mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions.replace(".", r"\.")):
        resolve_paradigm(registry(), "optical", table)


def test_bad_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text("[fc]\nq_levels = 'many'\n")
    with pytest.raises(ConfigError, match=r"fc\.q_levels"):
        load_newcomputebench_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_newcomputebench_config(tmp_path / "missing.toml")
