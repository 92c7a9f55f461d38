"""A NewComputeBench optical transform_cfg.toml, used unchanged, behaves as it does in NewComputeBench."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.config import load_run_config, resolve_paradigms
from newcompute.plugins import get_registry

TRANSFORM_CFG = """\
use_lora=true
[attention]
    q_levels=256
    q_lut_min=0.020040
    q_smooth_factor=0.9
    q_init_seed=0
    q_bypass=false

[fc]
    q_levels=128
    q_lut_min=0.020040
    q_smooth_factor=0.9
    q_init_seed=0
    q_bypass=false

[lora]
    r=4
    lora_alpha=12
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "transform_cfg.toml"
    path.write_text(text)
    return path


def test_linear_layers_take_newcomputebench_quantiles_and_use_lora_selects_lora(tmp_path: Path) -> None:
    run = load_run_config(None, [], {"optical": _file(tmp_path, TRANSFORM_CFG)})
    (use,) = resolve_paradigms(get_registry(), run)
    assert use.config.fc.q_quantiles == (0.001, 0.999) and use.config.fc.q_levels == 128
    assert use.config.attention.q_quantiles == (0.0, 1.0)  # attention products range over min and max there too
    assert (run.train.lora, run.train.lora_rank, run.train.lora_alpha) == (True, 4, 12.0)
    # A file's own quantiles, and a flag given on the command line, win.
    own = TRANSFORM_CFG.replace("q_levels=128", "q_levels=128\n    q_quantiles=[0.0, 1.0]")
    run = load_run_config(None, ["train.lora_rank=2"], {"optical": _file(tmp_path, own)})
    assert resolve_paradigms(get_registry(), run)[0].config.fc.q_quantiles == (0.0, 1.0)
    assert run.train.lora_rank == 2
    full = TRANSFORM_CFG.replace("use_lora=true", "use_lora=false")
    run = load_run_config(None, [], {"optical": _file(tmp_path, full)})
    assert run.train.lora is False


def test_a_lora_run_from_the_file_trains_adapters_of_its_rank_and_alpha(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        build_app(),
        ["train", "--model", "tiny", "--init", "scratch", "--paradigm", "optical", "--paradigm-config",
         f"optical={_file(tmp_path, TRANSFORM_CFG)}", "--steps", "2", "--batch-size", "2", "--micro-batch-size", "2",
         "--block-size", "32", "--max-tokens", "4096", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 12.0)


def test_the_file_as_a_run_file_names_the_option_that_reads_it(tmp_path: Path) -> None:
    path = _file(tmp_path, TRANSFORM_CFG)
    result = CliRunner().invoke(build_app(), ["transform", "--config", str(path)])
    assert result.exit_code == 2
    assert f"--paradigm-configoptical={path};itisreadunchanged" in "".join(result.output.split())
