"""The typed Python API: ``newcompute.apply(model, Config(...), include=..., filter_fn=...)``.

Config instances find their paradigm through their class; the call's rules
narrow every paradigm in it; every older way of naming paradigms still works.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny
from pydantic import Field
from torch import nn

import newcompute as nc
from newcompute.record import load, save_transformed
from newcompute.config import ModelSettings, RunConfig
from newcompute.tokenizer import byte_tokenizer

MLP = {f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")}
ATTENTION_PROJECTIONS = {
    f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
}


class GainConfig(nc.StrictConfig):
    gain: float = Field(2.0, gt=0.0, description="Multiplies every output.")


class OtherGainConfig(GainConfig):
    """A second paradigm of the same plugin: a config class of its own, with its own default."""

    gain: float = Field(3.0, gt=0.0, description="Multiplies every output.")


class SharedConfig(nc.StrictConfig):
    level: int = Field(1, description="Unused.")


class GainLinear(nc.ReplacedLinear):
    def __init__(self, source: nn.Module, gain: float) -> None:
        super().__init__(source)
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight_out_in(), self.bias) * self.gain


class GainPlugin:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        layer = frozenset({nc.Role.LAYER})
        return [
            nc.Paradigm("gain", "Scales outputs", GainConfig, layer),
            nc.Paradigm("gain3", "Scales outputs by 3", OtherGainConfig, layer),
            nc.Paradigm("shared-a", "Shares its config class", SharedConfig, layer),
            nc.Paradigm("shared-b", "Shares its config class", SharedConfig, layer),
        ]

    @nc.hookimpl
    def newcompute_replace_layer(
        self, paradigm: nc.Paradigm, config: nc.StrictConfig, name: str, module: nn.Module
    ) -> nn.Module | None:
        return GainLinear(module, getattr(config, "gain", 1.0)) if nc.is_linear_like(module) else None


@pytest.fixture
def gains() -> nc.Registry:
    registry = nc.Registry()
    registry.register(GainPlugin(), name="gain-plugin", distribution="nc-gain", version="0.3.0")
    return registry


def owned_by(report: nc.ComposeReport, paradigm: str) -> set[str]:
    return {name for name, owner in report.replaced.items() if owner == paradigm}


def test_two_config_instances_each_with_its_own_rules_on_the_installed_plugins() -> None:
    from newcompute_mx import Mxfp8Config, QuantizedLinear
    from newcompute_optical import OpticalConfig, OpticalLinear

    model = tiny()
    report = nc.apply(
        model,
        nc.Scope(OpticalConfig(), include=["*.self_attn*"]),
        nc.Scope(Mxfp8Config(), include=["*.mlp.*"]),
    )
    assert owned_by(report, "optical") == ATTENTION_PROJECTIONS
    assert owned_by(report, "mxfp8") == MLP
    assert report.attention == {"optical": ["model.layers.0.self_attn", "model.layers.1.self_attn"]}
    assert all(isinstance(model.get_submodule(n), OpticalLinear) for n in ATTENTION_PROJECTIONS)
    assert all(isinstance(model.get_submodule(n), QuantizedLinear) for n in MLP)
    assert type(model.lm_head) is nn.Linear
    text = str(report)
    assert "optical (newcompute-optical" in text and "mxfp8 (newcompute-mx" in text
    assert "8 layer(s) Linear -> OpticalLinear" in text and "model.layers.*.mlp.down_proj ×2" in text


def test_python_c_on_the_tiny_preset_prints_the_report() -> None:
    """The one-liner of the docs, as a user types it."""
    code = (
        "import newcompute as nc; from newcompute_optical import OpticalConfig; "
        "from newcompute.models import load_model; from newcompute.config import ModelSettings; "
        "model = load_model(ModelSettings(name='tiny', init='scratch')).model; "
        "print(nc.apply(model, OpticalConfig(), include=['*.mlp.*']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LlamaForCausalLM under optical" in result.stdout
    assert "6 layer(s) Linear -> OpticalLinear" in result.stdout
    assert "model.layers.*.mlp.up_proj ×2" in result.stdout and "self_attn" not in result.stdout


def test_the_config_class_names_the_paradigm_and_carries_its_values(gains: nc.Registry) -> None:
    model = tiny()
    report = nc.apply(model, OtherGainConfig(gain=5.0), registry=gains)
    assert report.paradigms == ["gain3"] and report.uses[0].config == OtherGainConfig(gain=5.0)
    assert model.get_submodule("model.layers.0.mlp.up_proj").gain == 5.0


def test_call_rules_and_filter_fn_narrow_every_paradigm_of_the_call(gains: nc.Registry) -> None:
    seen: list[tuple[type, str]] = []

    def first_layer(module: nn.Module, name: str) -> bool:
        seen.append((type(module), name))
        return ".0." in name

    report = nc.apply(
        tiny(),
        nc.Scope(GainConfig(), include=["*.self_attn.*"]),
        nc.Scope(OtherGainConfig(), include=["*.mlp.*"]),
        include=["*.mlp.*", "*.q_proj"],
        exclude=["*.down_proj"],
        filter_fn=first_layer,
        registry=gains,
    )
    assert owned_by(report, "gain3") == {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"}
    assert owned_by(report, "gain") == {"model.layers.0.self_attn.q_proj"}
    assert (nn.Linear, "model.layers.1.mlp.up_proj") in seen


def test_a_scope_may_include_the_head_that_the_default_rules_keep(gains: nc.Registry) -> None:
    report = nc.apply(tiny(), nc.Scope(GainConfig(), include=["lm_head"], exclude=[]), registry=gains)
    assert owned_by(report, "gain") == {"lm_head"}


def test_names_tables_pairs_mappings_and_uses_still_work(gains: nc.Registry) -> None:
    by_pair = nc.apply(tiny(), ("gain", {"gain": 4.0, "include": ["*.mlp.*"]}), registry=gains)
    by_mapping = nc.apply(tiny(), {"gain": {"gain": 4.0, "include": ["*.mlp.*"]}}, registry=gains)
    use = nc.resolve_paradigm(gains, "gain", {"gain": 4.0, "include": ["*.mlp.*"]})
    by_use = nc.apply(tiny(), [use], registry=gains)
    by_list_of_names = nc.apply(tiny(), ["gain3"], registry=gains)
    for report in (by_pair, by_mapping, by_use):
        assert owned_by(report, "gain") == MLP and report.uses[0].config == GainConfig(gain=4.0)
    assert len(by_list_of_names.replaced) == 14


def test_a_config_class_of_several_paradigms_or_of_none_is_a_clear_error(gains: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match=r"SharedConfig is the config of several paradigms \(shared-a, shared-b\)"):
        nc.apply(tiny(), SharedConfig(), registry=gains)

    class Unregistered(nc.StrictConfig):
        pass

    expected = r"No installed paradigm has the config class .*Unregistered.*gain \(GainConfig\)"
    with pytest.raises(nc.ConfigError, match=expected):
        nc.apply(tiny(), Unregistered(), registry=gains)


def test_a_base_config_class_points_to_the_paradigms_classes() -> None:
    from newcompute_mx.config import MXConfig

    with pytest.raises(nc.ConfigError, match=r"Mxfp8Config for 'mxfp8'"):
        nc.apply(tiny(), MXConfig())


def test_a_narrowed_use_is_recorded_as_the_modules_it_got(gains: nc.Registry, tmp_path: Path) -> None:
    """A filter is code, which newcompute.toml cannot hold: the record lists the modules it chose, for load()."""
    model = tiny()
    report = nc.apply(model, GainConfig(), filter_fn=lambda module, name: name.endswith("up_proj"), registry=gains)
    assert set(report.uses[0].rules.include) == {"model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"}
    save_transformed(model, byte_tokenizer(), RunConfig(model=ModelSettings(name="tiny", init="scratch")), tmp_path)
    loaded, _ = load(tmp_path, registry=gains)
    assert owned_by(nc.report_of(loaded), "gain") == {"model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"}


def test_rules_that_match_nothing_warn_and_are_an_error_when_strict(gains: nc.Registry) -> None:
    expected = r"paradigm 'gain' changed nothing: its rules \(include \['\*\.mpl\.\*'\]"
    with pytest.warns(nc.NewcomputeWarning, match=expected):
        report = nc.apply(tiny(), nc.Scope(GainConfig(), include=["*.mpl.*"]), registry=gains)
    assert "match no module" in str(report)
    with pytest.raises(nc.ConfigError, match="'gain' changed nothing"):
        nc.apply(tiny(), nc.Scope(GainConfig(), include=["*.mpl.*"]), registry=gains, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nc.NewcomputeWarning)
        nc.apply(tiny(), GainConfig(), registry=gains)


def test_replacements_take_the_training_mode_of_the_module_they_replace() -> None:
    """A layer that learns in training mode must not learn in an eval-mode model just because it is new."""
    from newcompute_optical import OpticalConfig

    for mode in (False, True):
        model = tiny().train(mode)
        report = nc.apply(model, OpticalConfig())
        assert report.replaced and report.attention["optical"]
        assert {module.training for module in model.modules()} == {mode}
