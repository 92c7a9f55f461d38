"""Model presets come from the ``newcompute_register_presets`` hook: the core's own and any plugin's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.config import ModelSettings
from newcompute.models import load_model
from newcompute.presets import CORE_PRESETS


def _narrow_llama():  # noqa: ANN202 - a transformers config
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64,
    )


def _lines(target: str, settings: object) -> Iterator[str]:
    for number in range(int(target)):
        yield f"line {number}: the quick brown fox jumps over the lazy dog\n"


class ExtensionPlugin:
    """What a plugin adds besides paradigms: a model preset and a data source."""

    @nc.hookimpl
    def newcompute_register_presets(self) -> list[nc.Preset]:
        return [
            nc.Preset("tiny-narrow", "One Llama layer of width 32, registered by a plugin", _narrow_llama),
            nc.Preset("tiny", "Clashes with the core's preset", _narrow_llama),
        ]

    @nc.hookimpl
    def newcompute_register_data_sources(self) -> list[nc.DataSource]:
        return [nc.DataSource("lines", "numbered lines of text", _lines, schemes=("lines:",))]


@pytest.fixture
def extended(monkeypatch: pytest.MonkeyPatch) -> nc.Registry:
    registry = nc.Registry()
    registry.register(ExtensionPlugin(), name="extension", distribution="nc-extension", version="0.2")
    monkeypatch.setattr(plugins, "_default", registry)
    return registry


def test_the_core_registers_its_presets_through_the_hook() -> None:
    registry = nc.Registry()
    assert list(registry.presets) == [preset.name for preset in CORE_PRESETS]
    assert registry.core.presets == list(registry.presets) and registry.records == []
    assert {registry.preset_plugin(name) for name in registry.presets} == {"newcompute"}


def test_a_clash_with_the_core_is_refused_and_reported(extended: nc.Registry) -> None:
    record = extended.records[0]
    assert record.status == "partial" and "preset 'tiny' is already registered by newcompute" in record.error
    assert extended.presets["tiny"] is next(p for p in CORE_PRESETS if p.name == "tiny")
    assert record.presets == ["tiny-narrow"]


def test_a_plugin_preset_and_data_source_are_trained_on(extended: nc.Registry, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(build_app(), ["presets"])
    assert listed.exit_code == 0 and "tiny-narrow" in listed.output and "nc-extension" in listed.output
    loaded = load_model(ModelSettings(name="tiny-narrow", init="scratch"), registry=extended)
    assert loaded.model.config.hidden_size == 32 and "preset 'tiny-narrow'" in loaded.source
    run = tmp_path / "run"
    args = ["train", "--model", "tiny-narrow", "--dataset", "lines:100", "--steps", "2", "--batch-size", "2",
            "--micro-batch-size", "2", "--block-size", "16", "-o", str(run)]
    trained = runner.invoke(build_app(), args)
    assert trained.exit_code == 0, trained.output
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    shown = " ".join(trained.output.replace("│", " ").split())
    assert "numbered lines of text: 100 (data source 'lines' of nc-extension)" in shown
    assert 'dataset = "lines:100"' in (run / "newcompute.toml").read_text()


def test_a_misspelt_preset_suggests_the_plugins_one(extended: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match="Did you mean 'tiny-narrow'"):
        load_model(ModelSettings(name="tiny-narow", init="scratch"), registry=extended)
