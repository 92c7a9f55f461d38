"""Third-party plugins on the command line: listed beside first-party ones, problems explained, filterable, trained."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer

from newcompute.cli.app import build_app
from newcompute.record import read_record

FIRST_PARTY = {"optical": "optical", "mx": "mxfp8", "normuon": "normuon"}


def newcompute(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process, as a shell would, with a wide terminal so table cells do not wrap."""
    environment = {k: v for k, v in os.environ.items() if k != "NEWCOMPUTE_PLUGINS"}
    environment.update(COLUMNS="250", **env)
    return subprocess.run(
        [sys.executable, "-c", "from newcompute.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.count("│") > 2]


def test_list_paradigms_shows_bitflip_next_to_the_first_party_paradigms() -> None:
    result = newcompute("list-paradigms")
    assert result.returncode == 0, result.stderr
    table = {row[0]: row for row in rows(result.stdout)}
    assert table["bitflip"][1] == "newcompute-bitflip 0.1.0"
    assert table["bitflip"][2] == "layer"
    installed = {ep.name for ep in entry_points(group="newcompute")}
    for plugin, paradigm in FIRST_PARTY.items():
        if plugin in installed:
            assert paradigm in table, f"first-party paradigm {paradigm} missing from list-paradigms"


def test_broken_and_incompatible_plugins_are_listed_with_reasons_and_the_rest_still_load(
    installed_plugins: Path,
) -> None:
    result = newcompute("list-paradigms", PYTHONPATH=str(installed_plugins))
    assert result.returncode == 0, result.stderr
    assert "Plugins with problems" in result.stdout
    problems = {row[0]: row for row in rows(result.stdout) if row[0].startswith("nc-")}
    assert problems["nc-broken"][2] == "failed" and "import failed" in problems["nc-broken"][3]
    assert problems["nc-future"][2] == "incompatible" and ">=9" in problems["nc-future"][3]
    names = {row[0] for row in rows(result.stdout)}
    assert {"bitflip", "halve"} <= names


def test_plugin_filter_loads_only_the_named_plugin() -> None:
    result = newcompute("list-paradigms", NEWCOMPUTE_PLUGINS="bitflip")
    assert result.returncode == 0, result.stderr
    assert [row[0] for row in rows(result.stdout)] == ["bitflip"]


def test_train_runs_with_the_bitflip_paradigm(tmp_path: Path) -> None:
    commands = typer.main.get_command(build_app()).commands
    if "train" not in commands:
        pytest.skip("the 'train' command does not exist yet")
    run = tmp_path / "run"
    result = newcompute(
        "train", "--paradigm", "bitflip", "--model", "tiny", "--init", "scratch",
        "--steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--block-size", "32",
        "--max-tokens", "20000", "--set", "data.validation_max_blocks=4", "--output-dir", str(run),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert read_record(run).paradigm["bitflip"]["w_zero_out_t"] == 1.25
