"""Data sources come from the ``newcompute_register_data_sources`` hook: the core's own and any plugin's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import newcompute as nc
from newcompute import plugins
from newcompute.cli.app import build_app
from newcompute.config import DataSettings
from newcompute.testing import ConformanceFailure, check_data_source
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.packing import pack
from newcompute.train.sources import open_source

EOS = 256


def _rows(target: str, settings: DataSettings) -> Iterator[str]:
    """``rows:N``: N numbered lines, one document each."""
    for number in range(int(target)):
        yield f"row {number}"


def _first_column(target: str, settings: DataSettings) -> Iterator[str]:
    """A ``.csv`` file: the first field of every line is a document."""
    for line in Path(target).read_text().splitlines():
        yield line.split(",")[0]


def _ids(target: str, settings: DataSettings) -> Iterator[object]:
    """``ids:``: two documents already tokenized, as a list and as an array."""
    yield [int(x) for x in target.split(",")]
    yield np.array([7, 8], dtype=np.int16)


def _pieces(target: str, settings: DataSettings) -> Iterator[Iterator[str]]:
    yield iter(["one doc", "ument ", "in pieces"])


def _broken(target: str, settings: DataSettings) -> Iterator[object]:
    yield "fine"
    if target == "dict":
        yield {"text": "not a document"}
    if target == "bytes":
        yield b"undecoded text"
    if target == "user":
        raise nc.ConfigError("broken:user is a message for the user")
    raise ValueError("the plugin's own bug")


def _no_words(target: str, settings: DataSettings) -> str:
    raise KeyError(target)


def _marked_folder(folder: Path) -> bool:
    """A folder holding ``MARK`` is one dataset: its ``MARK`` file's lines are the documents."""
    if (folder / "BROKEN").exists():
        raise OSError("the plugin's own bug")
    return (folder / "MARK").is_file()


def _marked_lines(target: str, settings: DataSettings) -> Iterator[str]:
    yield from (Path(target) / "MARK").read_text().splitlines()


class SourcesPlugin:
    @nc.hookimpl
    def newcompute_register_data_sources(self) -> list[nc.DataSource]:
        return [
            nc.DataSource("rows", "numbered rows", _rows, schemes=("rows:",)),
            nc.DataSource("csv", "first CSV column", _first_column, suffixes=(".csv",)),
            nc.DataSource("ids", "pre-tokenized documents", _ids, schemes=("ids:",)),
            nc.DataSource("pieces", "one document in pieces", _pieces, schemes=("pieces:",)),
            nc.DataSource("broken", "fails while it is read", _broken, schemes=("broken:",)),
            nc.DataSource("mute", "fails to describe itself", _rows, schemes=("mute:",), describe=_no_words),
            nc.DataSource("marked", "a folder with a MARK file", _marked_lines, folders=_marked_folder),
        ]


class ClashingPlugin:
    @nc.hookimpl
    def newcompute_register_data_sources(self) -> list[nc.DataSource]:
        return [
            nc.DataSource("csv2", "claims .csv again", _first_column, suffixes=(".csv",)),
            nc.DataSource("mytext", "claims the core's .txt", _first_column, suffixes=(".txt",)),
            nc.DataSource("nothing", "claims nothing", _rows),
            nc.DataSource("upper", "a bad scheme", _rows, schemes=("Rows",)),
            nc.DataSource("tsv", "claims a suffix nobody has", _first_column, suffixes=(".tsv",)),
        ]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> nc.Registry:
    registry = nc.Registry()
    registry.register(SourcesPlugin(), name="sources", distribution="nc-sources", version="0.3")
    monkeypatch.setattr(plugins, "_default", registry)
    return registry


def _tokens(dataset: str | Path, registry: nc.Registry) -> list[int]:
    settings = DataSettings(dataset=str(dataset), validation_fraction=0.5)
    corpus = pack(open_source(settings, registry), byte_tokenizer(), 1, settings, 0)
    return np.sort(np.concatenate([corpus.train.ravel(), corpus.validation.ravel()])).tolist()


def _bytes_and_eos(*documents: str) -> list[int]:
    return sorted([b for d in documents for b in d.encode()] + [EOS] * len(documents))


def test_the_core_registers_its_sources_through_the_hook() -> None:
    registry = nc.Registry()
    assert registry.core.data_sources == [
        "builtin", "text", "jsonl", "parquet", "hub", "tokens-bin", "tokens-npy", "hf-disk"
    ]
    assert list(registry.claims) == ["builtin:", ".txt", ".jsonl", ".parquet", "hf:", ".bin", ".npy"]
    assert {registry.data_source_plugin(n).distribution for n in registry.data_sources} == {"newcompute"}


def test_a_plugin_source_is_read_by_scheme_and_by_suffix(registry: nc.Registry, tmp_path: Path) -> None:
    assert _tokens("rows:3", registry) == _bytes_and_eos("row 0", "row 1", "row 2")
    (tmp_path / "d.csv").write_text("ab,1\ncd,2\n")
    assert _tokens(tmp_path / "d.csv", registry) == _bytes_and_eos("ab", "cd")
    (tmp_path / "e.txt").write_text("core")  # a folder mixes the core's suffixes and the plugin's
    assert _tokens(tmp_path, registry) == _bytes_and_eos("ab", "cd", "core")
    assert _tokens("pieces:", registry) == _bytes_and_eos("one document in pieces")
    source = open_source(DataSettings(dataset="rows:3"), registry)
    assert source.description == "numbered rows: 3 (data source 'rows' of nc-sources)" and source.bounded


def test_a_plugin_claims_whole_folders_and_its_failure_names_it(registry: nc.Registry, tmp_path: Path) -> None:
    (tmp_path / "MARK").write_text("xy\nz\n")
    (tmp_path / "other.txt").write_text("not read: the folder is one dataset")
    assert _tokens(tmp_path, registry) == _bytes_and_eos("xy", "z")
    (tmp_path / "BROKEN").write_text("")
    with pytest.raises(nc.PluginError, match=r"nc-sources.*'marked' looking at folder.*the plugin's own bug"):
        open_source(DataSettings(dataset=str(tmp_path)), registry)


def test_token_id_documents_are_used_as_they_are(registry: nc.Registry) -> None:
    settings = DataSettings(dataset="ids:1,2,3", validation_fraction=0.5)
    corpus = pack(open_source(settings, registry), byte_tokenizer(), 2, settings, 0)
    # [1 2 3] EOS [7 8] EOS → blocks [1 2] [3 EOS] [7 8]; the tail EOS is dropped; blocks 0 and 2 held out
    assert corpus.validation.tolist() == [[1, 2], [7, 8]] and corpus.train.tolist() == [[3, EOS]]
    outside = DataSettings(dataset="ids:1,999")
    with pytest.raises(nc.ConfigError, match=r"of nc-sources\) gave token id 999, outside the tokenizer's 257 ids"):
        pack(open_source(outside, registry), byte_tokenizer(), 2, outside, 0)


def test_clashes_are_refused_naming_both_plugins(registry: nc.Registry) -> None:
    record = registry.register(ClashingPlugin(), name="clashing", distribution="nc-clashing", version="1.0")
    assert record.status == "partial" and record.data_sources == ["tsv"]
    assert "data source 'csv2' claims '.csv', which data source 'csv' of nc-sources already claims" in record.error
    assert "data source 'mytext' claims '.txt', which data source 'text' of newcompute already claims" in record.error
    assert "data source 'nothing' claims no scheme" in record.error
    assert "'Rows' is not a scheme" in record.error
    assert registry.claims[".csv"].name == "csv"
    listed = CliRunner().invoke(build_app(), ["list-paradigms"])
    assert listed.exit_code == 0 and "nc-clashing" in listed.output and "partial" in listed.output


def test_data_sources_lists_each_with_its_claims_and_plugin(registry: nc.Registry) -> None:
    listed = CliRunner().invoke(build_app(), ["data-sources"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if line.count("│") == 5}
    assert "builtin:" in rows["builtin"] and "nc-sources" not in rows["builtin"]
    assert "rows:" in rows["rows"] and "nc-sources" in rows["rows"]


def test_an_unknown_scheme_or_suffix_is_exit_2_listing_the_valid_ones(registry: nc.Registry, tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(build_app(), ["train", "--dataset", "nosuch:x", "--steps", "1", "-o", str(tmp_path / "r")])
    assert unknown.exit_code == 2
    text = " ".join(unknown.output.split())
    assert "no data source reads 'nosuch:' datasets" in text
    assert "schemes builtin:, hf:, rows:, ids:, pieces:, broken:, mute:" in text
    assert ".parquet, .bin, .npy, .csv" in text
    (tmp_path / "d.xml").write_text("<a/>")
    suffix = runner.invoke(build_app(), ["train", "--dataset", str(tmp_path / "d.xml"), "-o", str(tmp_path / "r")])
    assert suffix.exit_code == 2 and "(a '.xml' file). Valid:" in " ".join(suffix.output.split())


def test_a_failing_source_names_its_plugin(registry: nc.Registry, tmp_path: Path) -> None:
    with pytest.raises(nc.PluginError, match=r"Plugin nc-sources 0\.3 failed in its data source 'broken' reading 'x'"):
        _tokens("broken:x", registry)
    with pytest.raises(nc.PluginError, match=r"it yielded a dict; a document is a str"):
        _tokens("broken:dict", registry)
    with pytest.raises(nc.PluginError, match=r"it yielded a bytes; a document is a str"):
        _tokens("broken:bytes", registry)
    with pytest.raises(nc.ConfigError, match=r"^broken:user is a message for the user$"):
        _tokens("broken:user", registry)
    with pytest.raises(nc.PluginError, match=r"failed in its data source 'mute' describing '3': KeyError"):
        open_source(DataSettings(dataset="mute:3"), registry)
    args = ["train", "--dataset", "broken:x", "--steps", "1", "--block-size", "8", "-o", str(tmp_path / "r")]
    failed = CliRunner().invoke(build_app(), args)
    text = " ".join(failed.output.split())
    assert failed.exit_code == 1 and "ValueError: the plugin's own bug" in text
    assert "Plugin nc-sources 0.3 failed in its data source 'broken'" in text and "Unexpected error" not in text


class FlakyPlugin:
    """A source whose documents depend on how often it was read: what the conformance check is for."""

    def __init__(self) -> None:
        self.reads = 0

    def _read(self, target: str, settings: DataSettings) -> Iterator[str]:
        self.reads += 1
        yield from ["same", f"read {self.reads}"]

    @nc.hookimpl
    def newcompute_register_data_sources(self) -> list[nc.DataSource]:
        return [nc.DataSource("flaky", "changes between reads", self._read, schemes=("flaky:",))]


def test_the_conformance_check_reads_twice_and_checks_every_document(tmp_path: Path) -> None:
    assert check_data_source(SourcesPlugin(), "rows:2") == ["row 0", "row 1"]
    assert check_data_source(SourcesPlugin(), "ids:1,2") == [[1, 2], [7, 8]]
    assert check_data_source(SourcesPlugin(), "pieces:") == ["one document in pieces"]
    (tmp_path / "d.csv").write_text("ab,1\n")
    assert check_data_source(SourcesPlugin(), str(tmp_path / "d.csv")) == ["ab"]
    with pytest.raises(ConformanceFailure, match=r"different documents on a second read \(first difference at "
                       r"document 1; 2 then 2 documents\)"):
        check_data_source(FlakyPlugin(), "flaky:x")
    with pytest.raises(ConformanceFailure, match=r"yielded a dict; a document is a str"):
        check_data_source(SourcesPlugin(), "broken:dict")
    with pytest.raises(ConformanceFailure, match=r"'notes.txt' is read by data source 'text' of newcompute, not"):
        check_data_source(SourcesPlugin(), "notes.txt")
    with pytest.raises(ConformanceFailure, match=r"did not register cleanly \(partial\)"):
        check_data_source(ClashingPlugin(), "x.tsv")
