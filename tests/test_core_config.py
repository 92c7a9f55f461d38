"""Run configuration: TOML files, overrides, validation errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import newcompute as nc
from newcompute.config import environment_overrides, load_run_config, parse_override, resolve_paradigms
from newcompute.rules import Rules

RUN_FILE = """
[model]
name = "tiny"
init = "scratch"

[train]
lr = 3e-4
steps = 10

[paradigm.scale]
factor = 2.0
include = ["*.mlp.*"]

[paradigm.exact-attn]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_file_holds_model_train_and_ordered_paradigms(tmp_path: Path, registry: nc.Registry) -> None:
    run = load_run_config(write(tmp_path, RUN_FILE))
    assert (run.model.name, run.model.init, run.train.lr, run.train.steps) == ("tiny", "scratch", 3e-4, 10)
    uses = resolve_paradigms(registry, run)
    assert [u.name for u in uses] == ["scale", "exact-attn"]
    assert uses[0].config.factor == 2.0
    assert uses[0].rules == Rules(include=("*.mlp.*",), exclude=("lm_head",))


def test_set_overrides_beat_the_file_and_parse_toml_values(tmp_path: Path, registry: nc.Registry) -> None:
    run = load_run_config(
        write(tmp_path, RUN_FILE),
        ["paradigm.scale.factor=4", "train.steps=3", 'paradigm.scale.exclude=["*.down_proj"]', "model.name=./my-llama"],
    )
    scale = resolve_paradigms(registry, run)[0]
    assert scale.config.factor == 4.0 and scale.rules.exclude == ("*.down_proj",)
    assert run.train.steps == 3 and run.model.name == "./my-llama"


def test_cli_selection_replaces_the_file_list(tmp_path: Path, registry: nc.Registry) -> None:
    run = load_run_config(write(tmp_path, RUN_FILE))
    assert [u.name for u in resolve_paradigms(registry, run, ["scale2"])] == ["scale2"]


def test_paradigm_files_supply_a_table_unchanged(tmp_path: Path, registry: nc.Registry) -> None:
    table = tmp_path / "scale.toml"
    table.write_text("factor = 7.0\n")
    run = load_run_config(None, ["paradigm.scale.include=['*.q_proj']"], {"scale": table})
    use = resolve_paradigms(registry, run)[0]
    assert use.config.factor == 7.0 and use.rules.include == ("*.q_proj",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nlrr = 1\n", "unknown key 'train.lrr'. Did you mean 'lr'?"),
        ("[modle]\nname = 'x'\n", "unknown key 'modle'. Did you mean 'model'?"),
        ("[train]\nbatch_size = 0\n", "'train.batch_size': Input should be greater than 0"),
        ("[model]\ninit = 'random'\n", "'model.init': Input should be 'auto', 'pretrained' or 'scratch'"),
        ("[train\n", "is not valid TOML"),
        ("[train]\nlr = inf\n", "'train.lr': Input should be a finite number (got inf)"),
        ("[train]\nweight_decay = nan\n", "'train.weight_decay': Input should be a finite number"),
        ("[train]\nbetas = [2, -1]\n", "'train.betas.0': Input should be less than 1 (got 2) 'train.betas.1'"),
        ("[train]\ngrad_clip = -inf\n", "'train.grad_clip': Input should be a finite number"),
    ],
)
def test_bad_files_name_the_field_and_what_is_valid(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(nc.ConfigError) as err:
        load_run_config(write(tmp_path, text))
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_a_file_that_is_not_utf8_names_the_byte_and_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[model]\nname = 'caf\u00e9'\n".encode("latin-1"))
    with pytest.raises(nc.ConfigError) as err:
        load_run_config(path)
    assert f"{path} is not UTF-8 text: byte 0xe9 at offset 19 (line 2)" in str(err.value)


def test_optimizer_settings_from_code_are_checked_too() -> None:
    with pytest.raises(nc.ConfigError, match=r"lr inf must be finite and > 0; betas\[0\] 2.0 must be in \[0, 1\)"):
        nc.OptimizerSettings(lr=float("inf"), betas=(2.0, 0.9))


def test_home_in_paths_is_expanded() -> None:
    run = load_run_config(None, ["train.output_dir='~/runs/a'", "data.dataset='~/corpus.txt'"])
    assert run.train.output_dir == str(Path.home() / "runs/a") and run.data.dataset == str(Path.home() / "corpus.txt")


def test_bad_paradigm_tables_name_the_paradigm_and_key(registry: nc.Registry) -> None:
    run = load_run_config(None, ["paradigm.scale.facotr=2"])
    with pytest.raises(nc.ConfigError, match=r"\[paradigm.scale\]: unknown key 'facotr'. Did you mean 'factor'\?"):
        resolve_paradigms(registry, run)
    run = load_run_config(None, ["paradigm.scale.factor=-1"])
    with pytest.raises(nc.ConfigError, match="'factor': Input should be greater than 0"):
        resolve_paradigms(registry, run)
    run = load_run_config(None, ["paradigm.scale.include=3"])
    with pytest.raises(nc.ConfigError, match=r"'paradigm.scale.include' must be a list of patterns"):
        resolve_paradigms(registry, run)
    run = load_run_config(None, ["paradigm.scale.include=['re:(']"])
    with pytest.raises(nc.ConfigError, match="not a valid regular expression"):
        resolve_paradigms(registry, run)


def test_missing_file_and_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(nc.ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nope.toml")
    with pytest.raises(nc.ConfigError, match="expected KEY=VALUE"):
        load_run_config(None, ["train.lr"])
    with pytest.raises(nc.ConfigError, match="'lr' is a value, not a table"):
        load_run_config(None, ["train.lr=1", "train.lr.x=2"])


def test_override_values_are_read_as_toml_else_text() -> None:
    assert parse_override("a.b=128") == (["a", "b"], 128)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=./path/x") == (["a"], "./path/x")


def test_head_alias_matches_the_output_head_under_any_name() -> None:
    rules = Rules()
    assert not rules.allows("embed_out", head_name="embed_out")
    assert rules.allows("embed_out", head_name="lm_head")
    assert Rules(include=("lm_head",), exclude=()).allows("embed_out", head_name="embed_out")
    assert Rules(include=("*.self_attn.*",)).allows("model.layers.0.self_attn")


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_strict_paradigm_config_refuses_numbers_that_are_not_finite(bad: float) -> None:
    class Noise(nc.StrictConfig):
        sigma: float = 0.1

    with pytest.raises(ValidationError, match="Input should be a finite number"):
        Noise(sigma=bad)
    assert Noise(sigma=1e30).sigma == 1e30


def test_environment_settings_come_after_the_file_and_before_set_and_flags(tmp_path: Path) -> None:
    environ = {
        "NEWCOMPUTE_TRAIN__LR": "0.003",
        "newcompute_train__batch_size": "8",
        "NEWCOMPUTE_PARADIGM__SCALE__FACTOR": "5.0",
        "NEWCOMPUTE_DEBUG": "1",
        "HOME": "/root",
    }
    overrides = environment_overrides(environ)
    assert overrides == ["paradigm.scale.factor=5.0", "train.lr=0.003", "train.batch_size=8"]
    file = write(tmp_path, "[train]\nlr = 0.1\nbatch_size = 4\nsteps = 3\n")
    run = load_run_config(file, [*overrides, "train.batch_size=2"])
    assert (run.train.lr, run.train.batch_size, run.train.steps) == (0.003, 2, 3)
    assert run.paradigm == {"scale": {"factor": 5.0}}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("NEWCOMPUTE_TRAIN__LRR", "NEWCOMPUTE_TRAIN__LRR: unknown key 'train.lrr'. Did you mean 'lr'?"),
        ("NEWCOMPUTE_TRIAN__LR", "NEWCOMPUTE_TRIAN__LR: unknown key 'trian'. Did you mean 'train'?"),
        ("NEWCOMPUTE_TRAIN____LR", "environment variable NEWCOMPUTE_TRAIN____LR: empty key"),
    ],
)
def test_an_environment_variable_naming_no_setting_is_refused_by_name(name: str, message: str) -> None:
    with pytest.raises(nc.ConfigError) as err:
        environment_overrides({name: "1"})
    assert message in str(err.value)
    assert err.value.exit_code == 2
