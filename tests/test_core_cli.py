"""The command line: tables, reports, exit codes and one-paragraph errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.record import RECORD_FILE

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), list(args))
    return result.exit_code, result.output


def test_version() -> None:
    code, out = invoke("--version")
    assert code == 0 and "newcompute 0.1.0 (plugin API 1.2)" in out


def test_list_paradigms_shows_plugins_and_problems(installed_plugins: Path) -> None:
    code, out = invoke("list-paradigms")
    assert code == 0
    assert "halve" in out and "nc-good 1.2.3" in out and "layer" in out
    assert "Plugins with problems" in out and "nc-broken" in out and "nc-future" in out


def test_show_lists_fields_and_rules(installed_plugins: Path) -> None:
    code, out = invoke("show", "halve")
    assert code == 0 and "factor" in out and "2.0" in out and "include" in out


def test_show_unknown_paradigm_exits_2_with_hint(installed_plugins: Path) -> None:
    code, out = invoke("show", "halv")
    assert code == 2 and "Did you mean 'halve'" in out and "Traceback" not in out


def test_transform_prints_report_and_saves(installed_plugins: Path, tmp_path: Path) -> None:
    code, out = invoke("transform", "--model", "tiny-gpt2", "--paradigm", "halve", "--save", str(tmp_path / "out"))
    assert code == 0, out
    assert "Conv1D" in out and "Halved" in out and "8" in out
    assert "random weights" in out and "Parameters:" in out
    assert (tmp_path / "out" / RECORD_FILE).is_file() and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["transform", "--model", "tiny", "--set", "train.lrr=1"], "Did you mean 'lr'"),
        (["transform", "--model", "tiny", "--paradigm", "halve", "--set", "paradigm.halve.factr=3"], "Did you mean 'factor'"),
        (["transform", "--model", "tiny", "--init", "random"], "'model.init'"),
        (["transform", "--config", "missing.toml"], "missing.toml does not exist"),
        (["transform", "--model", "tiny", "--paradigm-config", "halve"], "expected NAME=FILE"),
    ],
)
def test_bad_input_exits_2_with_one_paragraph(installed_plugins: Path, args: list[str], message: str) -> None:
    code, out = invoke(*args)
    assert code == 2, out
    assert message in " ".join(out.split()) and "Traceback" not in out


def test_plugin_commands_are_added(installed_plugins: Path) -> None:
    code, out = invoke("halve-info")
    assert code == 0 and "halving since 1.2.3" in out


def run_cli(args: list[str], plugin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "newcompute", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_subprocess_exit_codes(installed_plugins: Path) -> None:
    ok = run_cli(["transform", "--model", "tiny", "--paradigm", "halve"], installed_plugins)
    assert ok.returncode == 0, ok.stderr
    assert "Halved" in ok.stdout
    bad = run_cli(["transform", "--model", "tiny", "--paradigm", "nope"], installed_plugins)
    assert bad.returncode == 2 and "Unknown paradigm 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    usage = run_cli(["transform", "--bogus"], installed_plugins)
    assert usage.returncode == 2 and "No such option" in usage.stderr


def test_errors_quote_brackets_as_they_are() -> None:
    """Paths, layer regexes and library errors hold brackets that rich would read as markup."""
    code, out = invoke("transform", "--model", "./runs[/x]/m[0-3]")
    assert code == 2
    assert "Unknown model './runs[/x]/m[0-3]'" in " ".join(out.split())


def test_the_shell_completion_protocol_completes_command_names() -> None:
    env = {**os.environ, "_NEWCOMPUTE_COMPLETE": "complete_bash", "COMP_WORDS": "newcompute tr", "COMP_CWORD": "1"}
    result = subprocess.run([sys.executable, "-m", "newcompute"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["transform", "train"]
    assert "--install-completion" in runner.invoke(build_app(), ["--help"]).output


def test_a_command_is_quiet_about_torchao_and_debug_shows_it_again(tmp_path: Path) -> None:
    pytest.importorskip("torchao")
    command = [sys.executable, "-c", "import transformers, torchao; print('imported')"]
    loud = subprocess.run(command, capture_output=True, text=True, timeout=120)
    args = [sys.executable, "-m", "newcompute", "transform", "--model", "tiny", "--paradigm", "mxfp8"]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    if loud.stderr:  # torchao has something to say on this machine: DEBUG lets it through again
        debug_env = {**os.environ, "NEWCOMPUTE_DEBUG": "1"}
        debug = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=debug_env)
        assert loud.stderr.splitlines()[0] in debug.stderr
