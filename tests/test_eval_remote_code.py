"""A run folder never runs its own code because it was opened: only --trust-remote-code lets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import newcompute as nc
from newcompute.cli.app import build_app

MARKER_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM

class MarkerConfig(LlamaConfig):
    pass

class MarkerModel(LlamaForCausalLM):
    config_class = MarkerConfig
"""


def _invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args), catch_exceptions=False)


@pytest.fixture
def downloaded_run(tmp_path: Path) -> tuple[Path, Path]:
    """A saved run whose config maps the Auto classes to a .py in the folder that leaves a marker file."""
    folder, marker = tmp_path / "downloaded", tmp_path / "MARKER"
    saved = _invoke("transform", "--model", "tiny", "--init", "scratch", "--save", str(folder))
    assert saved.exit_code == 0, saved.output
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "marker_code.MarkerConfig", "AutoModelForCausalLM": "marker_code.MarkerModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "marker_code.py").write_text(MARKER_CODE.format(marker=str(marker)))
    return folder, marker


def test_eval_of_a_folder_with_auto_map_code_refuses_without_the_flag(downloaded_run: tuple[Path, Path]) -> None:
    folder, marker = downloaded_run
    result = _invoke("eval", str(folder))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "brings its own Python code (auto_map), which newcompute runs only when asked: pass --trust-remote-code" in text
    assert not marker.exists()

    record = folder / "newcompute.toml"  # the folder's own record cannot grant it either
    record.write_text(record.read_text().replace("[model]\n", "[model]\ntrust_remote_code = true\n"))
    result = _invoke("eval", str(folder))
    assert result.exit_code == 2 and "pass --trust-remote-code on the command line" in " ".join(result.output.split())
    assert not marker.exists()


def test_the_python_api_runs_folder_code_only_when_asked(downloaded_run: tuple[Path, Path]) -> None:
    folder, marker = downloaded_run
    with pytest.raises(nc.ConfigError, match="pass --trust-remote-code"):
        nc.load(folder)
    assert not marker.exists()
    model, _ = nc.load(folder, trust_remote_code=True)
    assert marker.read_text() == "the folder's code ran" and type(model).__name__ == "MarkerModel"
