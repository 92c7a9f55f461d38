"""``newcompute sensitivity`` finds a planted broken layer; its TOML excludes exactly that layer and trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ScaledLinear
from pydantic import BaseModel, Field
from torch import nn
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.config import load_run_config
from newcompute.record import load

PLANTED = "lm_head"
"""The planted layer. A randomly initialised model predicts almost uniformly whatever its hidden layers do (the
final norm fixes the hidden state's scale), so only the head can be broken in a way that surely raises the loss:
its logits times 30 are confident and wrong."""


class BreakConfig(BaseModel):
    target: str = Field(PLANTED, description="The one layer whose output is wrong.")


class BreakOnePlugin:
    """Replaces every linear layer it is allowed to; only ``target`` computes something else (its output times 30)."""

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("breakone", "Breaks one layer", BreakConfig, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # type: ignore[no-untyped-def]
        if not nc.is_linear_like(module):
            return None
        return ScaledLinear(module, 30.0 if name == config.target else 1.0)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> nc.Registry:
    registry = nc.Registry()
    registry.register(BreakOnePlugin(), name="breakone-plugin")
    monkeypatch.setattr(plugins, "_default", registry)
    return registry


ARGS = ["--model", "tiny", "--init", "scratch", "--block-size", "16", "--batches", "1", "--batch-size", "2"]
BREAK = ["-p", "breakone", "--set", "paradigm.breakone.exclude=[]"]  # the head too


def _sensitivity(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    toml = tmp_path / "plan.toml"
    result = CliRunner().invoke(
        build_app(),
        ["sensitivity", *ARGS, *extra, "--toml", str(toml), "--plot", str(tmp_path / "plan.png")],
        env={"COLUMNS": "200"},
    )
    return result.exit_code, result.output, toml


def test_the_planted_layer_is_ranked_first_and_alone_excluded(registry: nc.Registry, tmp_path: Path) -> None:
    code, out, toml = _sensitivity(tmp_path, *BREAK)
    assert code == 0, out
    table_lines = [line for line in out.splitlines() if "│" in line and "breakone" in line]
    assert PLANTED in table_lines[0] and "exact" in table_lines[0]
    assert not any("exact" in line for line in table_lines[1:])  # the other layers compute exactly: left alone
    run = load_run_config(toml, [])
    assert run.paradigm["breakone"]["exclude"] == [PLANTED]
    assert run.model.name == "tiny" and run.model.init == "scratch"
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert "within the budget 0.02" in " ".join(out.split())


def test_the_plan_trains_unchanged(registry: nc.Registry, tmp_path: Path) -> None:
    code, out, toml = _sensitivity(tmp_path, *BREAK)
    assert code == 0, out
    run_dir = tmp_path / "trained"
    result = CliRunner().invoke(
        build_app(),
        ["train", "--config", str(toml), "--steps", "2", "--batch-size", "2", "--micro-batch-size", "2",
         "--max-tokens", "4096", "-o", str(run_dir)],
    )
    assert result.exit_code == 0, result.output
    model, _ = load(run_dir, registry=registry)
    replaced = nc.report_of(model).replaced
    assert PLANTED not in replaced and "model.layers.1.mlp.down_proj" in replaced
    assert not isinstance(model.get_submodule(PLANTED), ScaledLinear)


def test_blocks_group_a_transformer_block(registry: nc.Registry, tmp_path: Path) -> None:
    code, out, toml = _sensitivity(tmp_path, *BREAK, "--unit", "block")
    assert code == 0, out
    assert "model.layers.1 " in out and "model.layers.0 " in out  # blocks are the units
    assert load_run_config(toml, []).paradigm["breakone"]["exclude"] == [PLANTED]


def test_a_noisy_paradigm_gives_the_same_plan_twice(tmp_path: Path) -> None:
    """Optical read-out noise is seeded and its state restored after every pass: the analysis repeats exactly."""
    runs = [_sensitivity(tmp_path / name, "-p", "optical", "--budget", "0", "--unit", "block") for name in "ab"]
    assert all(code == 0 for code, _, _ in runs), runs[0][1]
    assert runs[0][2].read_text() == runs[1][2].read_text()
    tables = [[line for line in out.splitlines() if "│" in line] for _, out, _ in runs]
    assert tables[0] == tables[1] and len(tables[0]) == 2  # the two blocks of the tiny preset


def test_layer_units_are_each_replaced_layer_and_attention_module() -> None:
    from newcompute.telemetry.sensitivity import owned_units
    from tests.conftest import tiny

    model = tiny()
    report = nc.apply(model, ["optical"])
    units = owned_units(model)
    assert {u.name for u in units} == set(report.replaced) | set(report.attention["optical"])
    assert all(u.members == (u.name,) and u.paradigms == ("optical",) for u in units)
    blocks = owned_units(model, "block")
    assert [u.name for u in blocks] == ["model.layers.0", "model.layers.1"]
    assert sum(len(u.members) for u in blocks) == len(units)


def test_a_model_without_layer_paradigms_is_refused(registry: nc.Registry, tmp_path: Path) -> None:
    code, out, _ = _sensitivity(tmp_path)
    assert code == 2 and "No paradigm was applied: sensitivity compares" in " ".join(out.split())


def test_exact_modules_restores_the_simulated_layers() -> None:
    from newcompute.telemetry.sensitivity import exact_modules
    from tests.conftest import tiny

    registry = nc.Registry()
    registry.register(BreakOnePlugin(), name="breakone-plugin")
    model = tiny()
    nc.apply(model, [("breakone", {"exclude": []})], registry=registry)
    tokens = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        broken = model(tokens).logits
        with exact_modules(model, {PLANTED}):
            fixed = model(tokens).logits
        again = model(tokens).logits
    assert torch.equal(broken, again) and not torch.allclose(broken, fixed)
    assert isinstance(model.get_submodule(PLANTED), nn.Module) and "forward" not in vars(model.get_submodule(PLANTED))
