"""Reading documents: the embedded corpus, local files the test writes, and clear errors for bad input."""

from __future__ import annotations

import builtins
import importlib.util
import json
from pathlib import Path
from typing import Any
from pydoc_data.topics import topics

import pytest

from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.train.sources import open_source


def _documents(dataset: str | Path, **settings: object) -> list[str]:
    """The documents of ``dataset`` as strings (a text file's pieces joined)."""
    documents = open_source(DataSettings(dataset=str(dataset), **settings)).documents()
    return [d if isinstance(d, str) else "".join(d) for d in documents]


def test_builtin_corpus_is_pydoc_topics_in_name_order() -> None:
    source = open_source(DataSettings())
    assert source.bounded and "pydoc_data.topics" in source.description
    assert list(source.documents()) == [topics[name] for name in sorted(topics)]


def test_txt_jsonl_and_folders(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("first file\n")
    rows = [{"text": "row one", "id": 1}, {"text": "row two", "id": 2}]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "notes.md").write_text("ignored")
    assert _documents(tmp_path / "a.txt") == ["first file\n"]
    assert _documents(tmp_path / "sub" / "c.jsonl") == ["row one", "row two"]
    assert _documents(tmp_path) == ["first file\n", "second file\n", "row one", "row two"]


def test_jsonl_with_another_text_column(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"content": "hello"}) + "\n")
    assert _documents(tmp_path / "d.jsonl", text_column="content") == ["hello"]


def test_unknown_column_names_the_keys_there_are(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"content": "hello", "id": 3}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1 has no key 'text' \(it has: content, id\)\. Pass --text-column"):
        _documents(tmp_path / "d.jsonl")


def test_missing_file_and_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data/missing.jsonl does not exist"):
        open_source(DataSettings(dataset="./data/missing.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match=r"x\.csv \(a '\.csv' file\)\. Valid: .*file suffixes \.txt, \.jsonl"):
        open_source(DataSettings(dataset=str(tmp_path / "x.csv")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no files any data source reads \(\.txt, \.jsonl, \.parquet, \.bin"):
        open_source(DataSettings(dataset=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="unknown built-in corpus 'builtin:wiki'"):
        _documents("builtin:wiki")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_hub_dataset_without_datasets_says_what_to_install() -> None:
    source = open_source(DataSettings(dataset="HuggingFaceFW/fineweb-edu", config_name="sample-10BT", streaming=True))
    assert not source.bounded
    assert source.description == "hub dataset HuggingFaceFW/fineweb-edu, config sample-10BT, split train (streamed)"
    with pytest.raises(ConfigError, match=r"needs the 'datasets' package: pip install 'newcompute\[data\]'"):
        next(iter(source.documents()))


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match=r"needs pyarrow: pip install pyarrow"):
        _documents(tmp_path / "d.parquet")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_parquet_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["p one", "p two"], "n": [1, 2]}), tmp_path / "d.parquet")
    assert _documents(tmp_path / "d.parquet") == ["p one", "p two"]
    with pytest.raises(ConfigError, match=r"has no column 'body'"):
        _documents(tmp_path / "d.parquet", text_column="body")


def test_a_save_to_disk_folder_without_datasets_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tokens"
    folder.mkdir()
    for name in ("dataset_info.json", "state.json"):  # what save_to_disk writes, by which the folder is known
        (folder / name).write_text("{}")
    real_import = builtins.__import__

    def no_datasets(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "datasets":
            raise ImportError("no datasets here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    source = open_source(DataSettings(dataset=str(folder)))
    with pytest.raises(ConfigError, match=r"tokens is a dataset saved with .*save_to_disk.*newcompute\[data\]"):
        list(source.documents())
