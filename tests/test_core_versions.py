"""Each paradigm's plugin release is recorded; reloading or resuming under another one warns, naming both."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import TestPlugin, tiny
from test_train_paradigms import TrainTestPlugin, quiet, tiny_run
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.config import ModelSettings, RunConfig, read_toml
from newcompute.record import RECORD_FILE, save_transformed
from newcompute.tokenizer import byte_tokenizer
from newcompute.train import train


def registry_at(version: str, plugin: object | None = None) -> nc.Registry:
    registry = nc.Registry()
    registry.register(plugin or TestPlugin(), name="test-plugin", distribution="nc-test", version=version)
    return registry


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    registry = registry_at("1.0.0")
    model = tiny()
    nc.apply(model, ["scale"], registry=registry)
    save_transformed(model, byte_tokenizer(), RunConfig(model=ModelSettings(name="tiny", init="scratch")), tmp_path)
    return tmp_path


def test_the_record_names_each_paradigms_distribution_and_version(saved: Path) -> None:
    record = read_toml(saved / RECORD_FILE)["record"]
    assert record["paradigms"] == {"scale": {"distribution": "nc-test", "version": "1.0.0"}}
    assert record["newcompute_version"] == nc.__version__


def test_loading_under_another_release_warns_naming_both(saved: Path) -> None:
    with pytest.warns(nc.NewcomputeWarning, match=r"'scale' was recorded with nc-test 1\.0\.0, and nc-test 2\.0\.0 is"):
        nc.load(saved, registry=registry_at("2.0.0"))


def test_loading_under_the_same_release_is_silent(saved: Path, recwarn: pytest.WarningsRecorder) -> None:
    nc.load(saved, registry=registry_at("1.0.0"))
    assert not [w for w in recwarn if issubclass(w.category, nc.NewcomputeWarning)]


def test_eval_of_a_run_folder_prints_the_warning(
    saved: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plugins, "_default", registry_at("2.0.0"))
    result = CliRunner().invoke(build_app(), ["eval", str(saved), "--max-blocks", "1", "--block-size", "16"])
    assert result.exit_code == 0, result.output
    shown = " ".join((result.output + capsys.readouterr().err).split())
    assert "Warning:" in shown and "nc-test 1.0.0, and nc-test 2.0.0 is installed now" in shown


def _stop_at(step: int):
    def callback(at: int, loss: float) -> None:
        if at == step:
            signal.raise_signal(signal.SIGINT)

    return callback


def test_resuming_under_another_release_warns(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = {"steps": 3, "save_every": 1}
    first = registry_at("1.0.0", TrainTestPlugin())
    train(tiny_run(run_dir, {"int8ish": {}}, **settings), first, console=quiet(), on_step=_stop_at(1))
    again = registry_at("1.1.0", TrainTestPlugin())
    expected = r"--resume from .*step-0+2: paradigm 'int8ish' was recorded with nc-test 1\.0\.0, and nc-test 1\.1\.0"
    with pytest.warns(nc.NewcomputeWarning, match=expected):
        train(tiny_run(run_dir, {"int8ish": {}}, **settings), again, console=quiet(), resume=True)
