"""Pre-tokenized input: raw ``.bin`` token files (nanoGPT-style) and ``.npy`` arrays, memory-mapped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import newcompute as nc
from newcompute.cli.app import build_app
from newcompute.config import DataSettings
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.packing import pack
from newcompute.train.sources import open_source

EOS = 256


def _pack(path: Path, **settings: object) -> np.ndarray:
    data = DataSettings(dataset=str(path), validation_fraction=0.5, **settings)
    corpus = pack(open_source(data, nc.Registry()), byte_tokenizer(), 3, data, 0)
    return np.sort(np.concatenate([corpus.train.ravel(), corpus.validation.ravel()]))


@pytest.mark.parametrize("width", ["uint16", "uint32"])
def test_a_bin_file_is_read_as_raw_little_endian_ids_of_the_given_width(tmp_path: Path, width: str) -> None:
    ids = np.array([5, 6, 7, 255, 8, 9, 10, 11], dtype=np.dtype(width).newbyteorder("<"))
    file = tmp_path / "train.bin"
    file.write_bytes(ids.tobytes())
    # 8 ids + the end-of-text separator = 9 tokens = 3 blocks of 3, all read as they are
    assert _pack(file, token_dtype=width).tolist() == sorted([*ids.tolist(), EOS])


def test_an_npy_array_is_read_whatever_its_integer_dtype(tmp_path: Path) -> None:
    file = tmp_path / "tokens.npy"
    np.save(file, np.array([1, 2, 3, 4, 5], dtype=np.int64))
    assert _pack(file).tolist() == [1, 2, 3, 4, 5, EOS]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("odd.bin", b"\x01\x00\x02", "has 3 bytes, not a whole number of uint16 tokens (2 bytes each)"),
        ("wide.bin", np.array([70000], dtype="<u4").tobytes() * 2, "gave token id 4464, outside"),
        ("grid.npy", None, "holds an array of shape (2, 2) and dtype int64; a token file must be one flat array"),
        ("floats.npy", np.array([0.5, 1.5]), "holds an array of shape (2,) and dtype float64"),
        ("junk.npy", b"not an array", "is not a readable .npy array"),
    ],
)
def test_a_bad_token_file_is_refused_naming_it(tmp_path: Path, name: str, content: object, message: str) -> None:
    file = tmp_path / name
    if content is None:
        np.save(file, np.arange(4).reshape(2, 2))
    elif isinstance(content, np.ndarray):
        np.save(file, content)
    else:
        file.write_bytes(content)
    with pytest.raises(nc.ConfigError) as err:
        _pack(file)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_train_runs_on_a_token_file_from_the_command_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    file = tmp_path / "corpus.bin"
    file.write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint16).tobytes())
    run = tmp_path / "run"
    args = ["train", "--model", "tiny", "--init", "scratch", "--dataset", str(file), "--steps", "2",
            "--batch-size", "2", "--micro-batch-size", "2", "--block-size", "32", "-o", str(run)]
    result = CliRunner().invoke(build_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "raw token ids" in " ".join(result.output.split())
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
