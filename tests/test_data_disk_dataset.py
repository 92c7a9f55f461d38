"""A save_to_disk dataset of input_ids is read as pre-tokenized documents, memory-mapped through datasets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import newcompute as nc
from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.packing import pack
from newcompute.train.sources import open_source

datasets = pytest.importorskip("datasets")

ROWS = [[1, 2, 3], [40, 41], list(range(100, 130))]


def _saved(folder: Path, rows: list[list[int]] = ROWS, **extra: list[object]) -> Path:
    datasets.Dataset.from_dict({"input_ids": rows, **extra}).save_to_disk(str(folder))
    return folder


def test_rows_are_documents_joined_by_end_of_text(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "tokens", text=["a", "b", "c"])
    data = DataSettings(dataset=str(folder), validation_fraction=0.5, cache=False)
    source = open_source(data, nc.Registry())
    assert "pre-tokenized save_to_disk dataset" in source.description
    corpus = pack(source, byte_tokenizer(), 4, data, seed=0)
    expected = [t for row in ROWS for t in [*row, 256]]
    blocks = np.asarray(expected[: len(expected) // 4 * 4]).reshape(-1, 4)
    got = np.concatenate([corpus.train, corpus.validation])
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, blocks.tolist()))
    assert corpus.documents == 3


def test_a_dataset_dict_reads_the_split(tmp_path: Path) -> None:
    folder = tmp_path / "dict"
    splits = {"train": [[5] * 19], "test": [[6] * 19]}  # 19 ids and the end-of-text token: five blocks of 4
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({"input_ids": rows}) for name, rows in splits.items()}
    ).save_to_disk(str(folder))
    data = DataSettings(dataset=str(folder), split="test", cache=False)
    corpus = pack(open_source(data, nc.Registry()), byte_tokenizer(), 4, data, seed=0)
    assert set(np.concatenate([corpus.train, corpus.validation]).ravel().tolist()) == {6, 256}
    with pytest.raises(ConfigError, match=r"data.split: .*dict has no split 'valid'; its splits are: train, test"):
        list(open_source(DataSettings(dataset=str(folder), split="valid"), nc.Registry()).documents())


def test_no_input_ids_column_exits_2_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "text-only"
    datasets.Dataset.from_dict({"text": ["hello"] * 4}).save_to_disk(str(folder))
    command = ["train", "--model", "tiny", "--steps", "1", "--dataset", str(folder), "-o", str(tmp_path / "run")]
    done = subprocess.run([sys.executable, "-m", "newcompute", *command], capture_output=True, text=True)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert str(folder) in message and "has no 'input_ids' column (its columns: text)" in message

