"""The token cache: a second read of the same local data is not tokenized again, and any change is."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import newcompute as nc
from newcompute.cli.app import build_app
from newcompute.config import DataSettings
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.packing import PackedCorpus, pack
from newcompute.train.sources import open_source
from newcompute.train.token_cache import cache_folder


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWCOMPUTE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokens"


def _pack(dataset: str, block: int = 4, limit: int | None = None, **settings: object) -> PackedCorpus:
    data = DataSettings(dataset=dataset, **settings)
    return pack(open_source(data, nc.Registry()), byte_tokenizer(), block, data, 0, limit)


def _squeezed(text: str) -> str:
    """The text without whitespace and table borders, which rich wraps long cells with."""
    return re.sub(r"[\s│]+", "", text)


def _tokens(corpus: PackedCorpus) -> list[int]:
    return np.concatenate([corpus.train.ravel(), corpus.validation.ravel()]).tolist()


def test_a_second_read_comes_from_the_cache_and_a_changed_file_is_tokenized_again(
    tmp_path: Path, own_cache: Path
) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    first = _pack(str(text))
    assert first.tokenized == f"tokenized now and cached in {own_cache}"
    assert len(list(own_cache.glob("*.npy"))) == 1 and len(list(own_cache.glob("*.json"))) == 1
    again = _pack(str(text))
    assert again.tokenized == f"tokens from the cache ({own_cache})"
    assert _tokens(again) == _tokens(first) and again.documents == first.documents
    assert again.exhausted == first.exhausted
    text.write_text("an entirely different text, which must not be read from the cache " * 20)
    os.utime(text, ns=(1, 1))
    changed = _pack(str(text))
    assert changed.tokenized.startswith("tokenized now") and _tokens(changed) != _tokens(first)
    assert _pack(str(text), limit=200).tokenized.startswith("tokenized now")  # the limit is in the key


def test_the_train_blocks_of_a_cached_corpus_are_read_from_the_mapped_file_not_copied(tmp_path: Path) -> None:
    from newcompute.train.blocks import PackedBlocks
    from newcompute.train.packing import BlockOrder

    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"line {n} of the corpus\n" for n in range(400)))
    fresh = _pack(str(text))
    cached = _pack(str(text))
    assert isinstance(cached.blocks, np.memmap) and not isinstance(fresh.blocks, np.memmap)
    assert cached.train_rows.size == fresh.train.shape[0] and cached.train_tokens == fresh.train.size
    order = BlockOrder(cached.train_rows.size, seed=3)
    samples = PackedBlocks(cached.blocks, order, cached.train_rows).take(5, 40)
    assert type(samples) is np.ndarray  # a batch is copied out of the mapping, the corpus is not
    assert np.array_equal(samples, fresh.train[order.indices(5, 40)])


def test_cache_off_reads_and_writes_nothing(tmp_path: Path, own_cache: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("abc " * 100)
    assert _pack(str(text), cache=False).tokenized == "tokenized now (cache off)"
    assert not own_cache.exists()


def test_a_torn_entry_is_ignored_and_rewritten(tmp_path: Path, own_cache: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("abc " * 100)
    _pack(str(text))
    for meta in own_cache.glob("*.json"):
        meta.unlink()
    assert _pack(str(text)).tokenized.startswith("tokenized now and cached")
    assert _pack(str(text)).tokenized.startswith("tokens from the cache")


def test_a_cache_that_cannot_be_written_is_said_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("NEWCOMPUTE_CACHE", str(blocker))
    text = tmp_path / "corpus.txt"
    text.write_text("abc " * 100)
    corpus = _pack(str(text))
    assert corpus.tokenized.startswith("tokenized now; not cached (")
    assert corpus.train.size > 0


def test_the_built_in_corpus_is_cached_under_the_python_version(own_cache: Path) -> None:
    assert _pack("builtin:pydoc", block=64, limit=4096).tokenized.startswith("tokenized now and cached")
    assert _pack("builtin:pydoc", block=64, limit=4096).tokenized.startswith("tokens from the cache")


def test_a_second_train_run_says_its_tokens_came_from_the_cache(tmp_path: Path, own_cache: Path) -> None:
    args = ["train", "--model", "tiny", "--init", "scratch", "--steps", "1", "--batch-size", "2",
            "--micro-batch-size", "2", "--block-size", "32", "--max-tokens", "8192"]
    first = CliRunner().invoke(build_app(), [*args, "-o", str(tmp_path / "a")], catch_exceptions=False)
    second = CliRunner().invoke(build_app(), [*args, "-o", str(tmp_path / "b")], catch_exceptions=False)
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "tokenizednowandcached" in _squeezed(first.output)
    assert _squeezed(f"tokens from the cache ({cache_folder()})") in _squeezed(second.output)
    losses = [json.loads((tmp_path / run / "summary.json").read_text())["final_val_loss"] for run in ("a", "b")]
    assert losses[0] == losses[1]  # the same tokens, so the same seeded run
