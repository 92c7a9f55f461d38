"""A plugin's bug names the plugin: hooks, forward and backward, validators, imports that exit, broken commands."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _write_dist, tiny
from pydantic import BaseModel, Field, field_validator
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.culprit import blame
from newcompute.testing import sample_batch

HEADER = '''
import torch
from pydantic import Field
from torch import nn
import newcompute as nc

newcompute_api = ">=1.0,<2"

class Config(nc.StrictConfig):
    level: int = Field(1, description="Unused.")
'''

RAISING_HOOK = HEADER + '''
@nc.hookimpl
def newcompute_register_paradigms():
    return [nc.Paradigm("raising", "Raises in its layer hook", Config, frozenset({nc.Role.LAYER}))]

@nc.hookimpl
def newcompute_replace_layer(paradigm, config, name, module):
    if nc.is_linear_like(module):
        raise ValueError(f"cannot handle a {tuple(module.weight.shape)} weight")
    return None
'''

RAISING_MODULES = HEADER + '''
class Crashes(nc.ReplacedLinear):
    def forward(self, x):
        return x[:, :, 10_000]

class Backwards(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise ArithmeticError("no gradient for this one")

class CrashesBackward(nc.ReplacedLinear):
    def forward(self, x):
        return Backwards.apply(nn.functional.linear(x, self.weight_out_in(), self.bias))

class BackwardConfig(Config):
    pass

@nc.hookimpl
def newcompute_register_paradigms():
    layer = frozenset({nc.Role.LAYER})
    return [
        nc.Paradigm("crashing", "Raises in its forward", Config, layer),
        nc.Paradigm("crashing-backward", "Raises in its backward", BackwardConfig, layer),
    ]

@nc.hookimpl
def newcompute_replace_layer(paradigm, config, name, module):
    if not nc.is_linear_like(module):
        return None
    return Crashes(module) if paradigm.name == "crashing" else CrashesBackward(module)
'''

BAD_COMMANDS = HEADER + '''
@nc.hookimpl
def newcompute_register_commands(app):
    @app.command("half-added")
    def half_added():
        """Registered before the hook raised."""

    raise RuntimeError("command table is broken")
'''

URL = "https://example.org/nc-raising"


@pytest.fixture
def failing_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Installed-looking distributions whose plugins fail in every way a plugin can."""
    modules = {
        "nc_raising_plugin": ("nc-raising", RAISING_HOOK, "raising", f"Project-URL: Homepage, {URL}\n"),
        "nc_crashing_plugin": ("nc-crashing", RAISING_MODULES, "crashing", ""),
        "nc_exiting_plugin": ("nc-exiting", "import sys\nsys.exit(3)\n", "exiting", ""),
        "nc_commands_plugin": ("nc-commands", BAD_COMMANDS, "commands", ""),
        "nc_photonic_plugin": ("nc-photonic", "import photonic_driver_missing\n", "photonic", ""),
    }
    for module, (dist, source, entry_point, metadata) in modules.items():
        _write_dist(tmp_path, dist, module, source, entry_point, metadata)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_default", None)
    yield tmp_path
    for module in modules:
        sys.modules.pop(module, None)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, " ".join(result.output.split())


def test_a_layer_hook_error_names_plugin_paradigm_hook_and_layer(failing_plugins: Path) -> None:
    code, out = invoke("transform", "--model", "tiny", "--paradigm", "raising")
    assert code == 1, out
    assert (
        "Plugin nc-raising 1.2.3 (paradigm 'raising') failed in newcompute_replace_layer for layer "
        "'model.layers.0.self_attn.q_proj': ValueError: cannot handle a (64, 64) weight" in out
    )
    assert f"report it at {URL}" in out and "NEWCOMPUTE_DEBUG=1" in out
    assert "Traceback" not in out and "Unexpected error" not in out


def test_newcompute_debug_shows_the_plugins_traceback(failing_plugins: Path) -> None:
    env = {**os.environ, "NEWCOMPUTE_DEBUG": "1", "PYTHONPATH": str(failing_plugins)}
    args = [sys.executable, "-m", "newcompute", "transform", "--model", "tiny", "--paradigm", "raising"]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "nc_raising_plugin.py" in result.stderr
    assert "ValueError: cannot handle a (64, 64) weight" in result.stderr


def test_a_forward_error_names_the_layer_without_wrapping_forward(failing_plugins: Path) -> None:
    code, out = invoke("eval", "tiny", "--init", "scratch", "--paradigm", "crashing", "--max-blocks", "1")
    assert code == 1, out
    assert "Plugin nc-crashing 1.2.3 (paradigm 'crashing') failed in the forward pass of its module" in out
    assert "for layer 'model.layers.0.self_attn.q_proj': IndexError" in out
    assert "it declares no project URL" in out and "Traceback" not in out


def test_a_backward_error_names_the_plugin_from_its_code(tmp_path: Path) -> None:
    path = tmp_path / "nc_backward_plugin.py"
    path.write_text(RAISING_MODULES)
    spec = importlib.util.spec_from_file_location("nc_backward_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nc_backward_plugin"] = module
    try:
        spec.loader.exec_module(module)
        registry = nc.Registry()
        registry.register(module, name="backward", distribution="nc-backward", version="0.1")
        model = tiny()
        nc.apply(model, module.BackwardConfig(), registry=registry)
        ids = sample_batch()
        with pytest.raises(ArithmeticError) as caught:
            model(input_ids=ids, labels=ids).loss.backward()
    finally:
        sys.modules.pop("nc_backward_plugin")
    culprit = blame(caught.value, registry.code_roots())
    assert culprit is not None
    assert (culprit.distribution, culprit.hook) == ("nc-backward", "backward() during the backward pass")


def test_a_crashing_validator_is_the_plugins_error(registry: nc.Registry) -> None:
    class Fragile(BaseModel):
        ratio: float = Field(1.0, description="Divides by itself.")

        @field_validator("ratio")
        @classmethod
        def _check(cls, value: float) -> float:
            return 1 / value

    class FragilePlugin:
        @nc.hookimpl
        def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
            return [nc.Paradigm("fragile", "Crashes on zero", Fragile, frozenset({nc.Role.LAYER}))]

    registry.register(FragilePlugin(), name="fragile", distribution="nc-fragile", version="2.0")
    with pytest.raises(nc.PluginError, match=r"nc-fragile 2\.0 \(paradigm 'fragile'\) failed in validating Fragile"):
        nc.resolve_paradigm(registry, "fragile", {"ratio": 0.0})


def test_sys_exit_at_import_and_broken_commands_are_isolated(failing_plugins: Path) -> None:
    code, help_text = invoke("--help")
    assert code == 0 and "list-paradigms" in help_text and "half-added" not in help_text
    code, out = invoke("list-paradigms")
    assert code == 0 and "raising" in out and "crashing" in out
    assert "nc-exiting" in out and "nc-commands" in out
    reasons = {record.distribution: (record.status, record.error) for record in plugins.get_registry().failed()}
    assert reasons["nc-exiting"] == ("failed", "import failed: SystemExit: 3")
    broken = "newcompute_register_commands raised RuntimeError: command table is broken"
    assert reasons["nc-commands"] == ("failed", broken)


def test_unknown_paradigm_says_which_plugin_failed_to_load_and_why(failing_plugins: Path) -> None:
    code, out = invoke("show", "photonic")
    assert code == 2
    assert "It may come from a plugin that failed to load: nc-photonic (failed: import failed: ModuleNotFound" in out
    assert "photonic_driver_missing" in out


def test_unknown_names_in_newcompute_plugins_are_reported(
    failing_plugins: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEWCOMPUTE_PLUGINS", "raising,nc-crashng")
    code, out = invoke("list-paradigms")
    assert code == 0 and "not found" in out
    warned = " ".join(capsys.readouterr().err.split())
    assert "Warning: NEWCOMPUTE_PLUGINS names 'nc-crashng', which is no installed plugin's entry point" in warned
    assert "Did you mean 'nc-crashing'?" in warned
    assert "raising" in out and "crashing-backward" not in out


def test_an_empty_rule_match_warns_and_strict_exits_2(installed_plugins: Path) -> None:
    args = ["transform", "--model", "tiny", "--paradigm", "halve", "--set", 'paradigm.halve.include=["*.mpl.*"]']
    code, out = invoke(*args)
    assert code == 0 and "Warning: paradigm 'halve' changed nothing: its rules (include ['*.mpl.*']" in out
    code, out = invoke(*args, "--strict")
    assert code == 2 and "Error: paradigm 'halve' changed nothing" in out


def test_api_ranges_a_1_0_plugin_may_declare() -> None:
    def plugin(declared: str) -> object:
        return type("Declared", (), {"newcompute_api": declared})()

    registry = nc.Registry()
    assert registry.register(plugin(">=1.0,<2"), name="range").status == "ok"
    assert registry.register(plugin("~=1.0"), name="compatible").status == "ok"
    exact = registry.register(plugin("==1.0.*"), name="exact")
    assert exact.status == "incompatible"
    assert "this core provides 1.2 (minor versions only add hooks: declare '>=1.0,<2'" in exact.error
