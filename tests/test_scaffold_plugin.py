"""``newcompute new-plugin``: names, roles, the files written, and the generated plugin passing its own tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import newcompute as nc
from newcompute.cli.app import build_app
from newcompute.paradigm import Role
from newcompute.scaffold import PluginNames, generate_plugin, parse_roles, plan_files


def test_names_are_derived_from_the_paradigm_name() -> None:
    assert PluginNames.from_name("analog-crossbar") == PluginNames(
        paradigm="analog-crossbar",
        package="newcompute_analog_crossbar",
        distribution="newcompute-analog-crossbar",
        class_prefix="AnalogCrossbar",
        title="Analog crossbar",
    )


@pytest.mark.parametrize("name", ["Photonic", "1bit", "two--dashes", "dot.ted", "trailing-", ""])
def test_invalid_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(nc.ConfigError, match="must start with a lower-case letter"):
        PluginNames.from_name(name)


def test_roles_are_parsed_in_canonical_order_and_unknown_ones_refused() -> None:
    assert parse_roles("optimizer, layer,layer") == (Role.LAYER, Role.OPTIMIZER)
    with pytest.raises(nc.ConfigError, match="unknown role 'attn'; choose one or more of layer, attention, optimizer"):
        parse_roles("layer,attn")


@pytest.mark.parametrize(
    ("roles", "modules"),
    [
        ((Role.LAYER,), {"ops.py", "layer.py"}),
        ((Role.ATTENTION,), {"ops.py", "attention.py"}),
        ((Role.OPTIMIZER,), {"optimizer.py"}),
    ],
)
def test_each_role_brings_its_module_hook_and_test(roles: tuple[Role, ...], modules: set[str]) -> None:
    files = plan_files("probe", roles)
    package = {Path(p).name for p in files if p.startswith("newcompute_probe/")}
    assert package == {"__init__.py", "config.py", "plugin.py"} | modules
    role = roles[0].value
    assert f"tests/test_probe_{role}.py" in files
    plugin = files["newcompute_probe/plugin.py"]
    hooks = {"layer": "newcompute_replace_layer", "attention": "newcompute_attention_matmuls",
             "optimizer": "newcompute_build_optimizer"}
    assert [hook for hook in hooks.values() if hook in plugin] == [hooks[role]]
    for path, text in files.items():
        if path.endswith(".py"):
            ast.parse(text, filename=path)
            assert "$" not in text, f"unsubstituted template variable in {path}"


def test_pyproject_declares_the_entry_point_and_test_markers() -> None:
    pyproject = plan_files("probe", (Role.LAYER,))["pyproject.toml"]
    assert '[project.entry-points.newcompute]\nprobe = "newcompute_probe.plugin"' in pyproject
    assert 'markers = ["gpu: needs a CUDA GPU (skipped on CPU)"]' in pyproject


def test_cli_writes_the_distribution_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    result = runner.invoke(app, ["new-plugin", "probe", "--roles", "attention", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "probe" / "newcompute_probe" / "attention.py").is_file()
    assert "pip install -e" in result.output
    again = runner.invoke(app, ["new-plugin", "probe", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output


GENERATED = "scaffold-check"


@pytest.fixture
def installed_scaffold(tmp_path: Path) -> Iterator[Path]:
    """The generated distribution, pip-installed (editable) into this interpreter, removed afterwards."""
    folder = generate_plugin(GENERATED, (Role.LAYER, Role.ATTENTION, Role.OPTIMIZER), tmp_path)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(folder)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    try:
        yield folder
    finally:
        subprocess.run([*pip, "uninstall", "-y", "newcompute-scaffold-check"], capture_output=True)


def test_generated_plugin_installs_and_passes_its_own_tests(installed_scaffold: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(installed_scaffold)],
        capture_output=True,
        text=True,
        cwd=installed_scaffold.parent,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "passed" in summary, summary
