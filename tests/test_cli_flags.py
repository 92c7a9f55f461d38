"""Command-line flags come from the config models: every described field is a flag, and flags validate like --set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.cli.flags import config_flags, run_tables, with_config_flags
from newcompute.config import NO_FLAG, apply_overrides, flag, load_run_config

runner = CliRunner()


def _names(command: str) -> dict[str, str]:
    """Every option string of ``command``'s config flags → the config key it sets."""
    names = {}
    for item in config_flags(command):
        for declaration in item.names:
            for name in declaration.split("/"):
                names[name] = item.key
    return names


def _flat(text: str) -> str:
    return re.sub(r"[\s│]+", " ", text)


def test_every_described_field_is_a_train_flag_named_after_it() -> None:
    names = _names("train")
    for table, model in run_tables().items():
        for field_name, field in model.model_fields.items():
            key = f"{table}.{field_name}"
            if field.description and field.json_schema_extra != NO_FLAG:
                assert key in names.values(), key
            else:
                assert key not in names.values(), key
    assert names["--lora-rank"] == "train.lora_rank"
    assert names["--no-compile"] == "train.compile"
    for renamed, key in {
        "--precision": "train.mixed_precision",
        "--dataset-config": "data.config_name",
        "--output-dir": "train.output_dir",
        "-o": "train.output_dir",
        "--model": "model.name",
        "-m": "model.name",
        "--init": "model.init",
        "--cuda-graphs": "train.cuda_graphs",
        "--streaming": "data.streaming",
    }.items():
        assert names[renamed] == key


def test_each_command_takes_only_its_flags() -> None:
    assert set(_names("eval").values()) == {
        "model.init", "data.dataset", "data.max_tokens", "train.block_size", "train.threads"
    }
    assert set(_names("transform").values()) == {"model.name", "model.init", "train.strict", "train.threads"}


def test_train_help_groups_the_flags_by_table() -> None:
    result = runner.invoke(build_app(), ["train", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for panel in ("─ Model ─", "─ Data ─", "─ Training ─"):
        assert panel in result.output
    help_text = _flat(result.output)
    assert "--lora-rank" in help_text and "LoRA rank. [default: 8]" in help_text
    assert "auto|no|bf16|fp16" in help_text


def _echo_app(command: str, tables: dict[str, type[BaseModel]] | None = None) -> typer.Typer:
    """An app whose one command prints the overrides its config flags produced, one per line."""
    app = typer.Typer()

    @app.command()
    @with_config_flags(command, tables)
    def echo(*, flags: list[str]) -> None:
        for item in flags:
            typer.echo(item)

    @app.command()
    def other() -> None:
        """A second command, so that ``echo`` is invoked by name."""

    return app


def test_given_flags_override_the_run_file_and_the_others_leave_it(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text('[train]\nsteps = 7\nseed = 5\ncompile = true\n[data]\nsplit = "validation"\n')
    args = ["echo", "--seed", "1", "--no-compile", "--precision", "bf16", "--dataset-config", "sample", "-o", "a b"]
    result = runner.invoke(_echo_app("train"), args)
    assert result.exit_code == 0, result.output
    run = load_run_config(run_file, result.output.splitlines())
    assert (run.train.steps, run.train.seed, run.train.compile, run.train.mixed_precision) == (7, 1, False, "bf16")
    assert (run.data.split, run.data.config_name, run.train.output_dir) == ("validation", "sample", "a b")


class Telemetry(BaseModel):
    """Field types other helpers add: lists, literals, optional numbers."""

    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field([], description="Trackers.")
    cuda_graphs: Literal["auto", "on", "off"] = Field("auto", description="Capture graphs.")
    telemetry_every: int | None = Field(None, gt=0, description="Statistics every N steps.")
    levels: Literal[1, 2, 4] = Field(1, description="Levels.")
    strict: bool = Field(False, description="Refuse unmatched rules.")
    ratio: float = Field(0.5, description="A ratio.", json_schema_extra=flag("--the-ratio", "-r"))
    hidden: int = Field(3, description="Not a flag.", json_schema_extra=NO_FLAG)
    undocumented: int = 3


def test_lists_literals_optionals_and_bools_become_the_values_the_model_validates() -> None:
    app = _echo_app("train", {"telemetry": Telemetry})
    args = ["echo", "--report-to", "tensorboard,wandb", "--report-to", "trackio", "--cuda-graphs", "off"]
    args += ["--telemetry-every", "5", "--levels", "4", "--strict", "-r", "0.25"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data: dict[str, dict[str, object]] = {}
    apply_overrides(data, result.output.splitlines())
    settings = Telemetry.model_validate(data["telemetry"])
    assert settings.report_to == ["tensorboard", "wandb", "trackio"]
    assert (settings.cuda_graphs, settings.telemetry_every, settings.levels) == ("off", 5, 4)
    assert (settings.strict, settings.ratio) == (True, 0.25)
    help_text = _flat(runner.invoke(app, ["echo", "--help"], env={"COLUMNS": "120"}).output)
    assert "--telemetry-every" in help_text and "--no-strict" in help_text
    assert "--hidden" not in help_text and "--undocumented" not in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "'train.steps': Input should be greater than 0 (got 0)"),
        (["--precision", "fp64"], "'train.mixed_precision': Input should be 'auto', 'no', 'bf16' or 'fp16'"),
        (["--init", "random"], "'model.init': Input should be 'auto', 'pretrained' or 'scratch'"),
    ],
)
def test_a_bad_flag_value_is_the_config_error_naming_the_field(args: list[str], message: str) -> None:
    result = runner.invoke(build_app(), ["train", "--model", "tiny", *args])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)


def test_an_own_option_that_clashes_with_a_config_flag_is_refused_when_the_command_is_declared() -> None:
    def command(steps: Annotated[int, typer.Option("--steps")] = 1, *, flags: list[str]) -> None:
        """Declares --steps itself, which train.steps already gives."""

    with pytest.raises(TypeError, match=r"\['--steps'\] clash with config flags"):
        with_config_flags("train")(command)
