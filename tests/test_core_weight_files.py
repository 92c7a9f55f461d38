"""A truncated or garbage weights file is refused naming the file (exit 2), not as an unexpected error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from newcompute import weight_files
from newcompute.cli.app import build_app


def _invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args), catch_exceptions=False)


def _flat(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_eval_and_train_name_a_damaged_safetensors_file(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "saved"
    assert _invoke("transform", "--model", "tiny", "--init", "scratch", "--save", str(folder)).exit_code == 0
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"this is not a tensor file" * 40)
    evaluated = _invoke("eval", str(folder))
    assert evaluated.exit_code == 2
    assert _flat(f"{weights} is not a complete safetensors file") in _flat(evaluated.output)
    trained = _invoke("train", "--model", str(folder), "--steps", "1", "-o", str(tmp_path / "run"))
    assert trained.exit_code == 2
    assert _flat(f"the model in {folder} cannot be loaded") in _flat(trained.output)


def test_torch_files_are_checked_by_their_archive(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.bin"
    torch.save({"state": torch.ones(1000)}, path)
    assert weight_files.problem(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    assert "not a complete torch file" in (weight_files.problem(path) or "")
    legacy = tmp_path / "legacy.bin"
    torch.save({"x": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert weight_files.problem(legacy) is None
