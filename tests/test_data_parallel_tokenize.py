"""Tokenizing with datasets.map over several processes gives the sequential path's tokens, token for token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests_support import announced_train_script

import newcompute as nc
from newcompute.config import DataSettings
from newcompute.tokenizer import byte_tokenizer
from newcompute.train import parallel_tokenize
from newcompute.train.packing import PackedCorpus, pack
from newcompute.train.sources import open_source

pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These corpora are small; the rule that keeps small ones in one process is tested on its own."""
    monkeypatch.setattr(parallel_tokenize, "MIN_BYTES", 0)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a.txt").write_text("".join(f"line {i}: naïve café\n" for i in range(9000)), encoding="utf-8")
    rows = [{"text": f"row {i} " + "ünïcode " * (i % 5)} for i in range(300)]
    (folder / "b.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return folder


def _pack(folder: Path, processes: int, cache: bool = False) -> PackedCorpus:
    data = DataSettings(dataset=str(folder), cache=cache)
    return pack(open_source(data, nc.Registry()), byte_tokenizer(), 16, data, seed=3, processes=processes)


def test_datasets_map_gives_the_same_tokens_as_the_sequential_path(tmp_path: Path) -> None:
    folder = _corpus(tmp_path / "corpus")
    environ = os.environ
    sequential, parallel = _pack(folder, processes=1), _pack(folder, processes=2)
    # datasets swaps os.environ for a copy and turns tokenizer threads off; both are put back.
    assert os.environ is environ and "TOKENIZERS_PARALLELISM" not in os.environ
    assert sequential.tokenized == "tokenized now (cache off)"
    assert parallel.tokenized == "tokenized now with datasets.map over 2 processes (cache off)"
    assert np.array_equal(parallel.train, sequential.train)
    assert np.array_equal(parallel.validation, sequential.validation)
    assert (parallel.documents, parallel.tokens_read, parallel.exhausted) == (301, sequential.tokens_read, True)
    # The byte tokenizer: one token per byte of each document, then end-of-text.
    assert sequential.tokens_read == len((folder / "a.txt").read_bytes()) + 1 + sum(
        len(json.loads(line)["text"].encode()) + 1 for line in (folder / "b.jsonl").read_text().splitlines()
    )
    assert not list((tmp_path).glob("**/tokenize-*"))  # the scratch folder is removed


def test_the_parallel_result_is_what_the_cache_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWCOMPUTE_CACHE", str(tmp_path / "cache"))
    folder = _corpus(tmp_path / "corpus")
    first = _pack(folder, processes=2, cache=True)
    assert first.tokenized.startswith("tokenized now with datasets.map over 2 processes and cached in")
    again = _pack(folder, processes=1, cache=True)  # the key does not depend on how the tokens were made
    assert again.tokenized.startswith("tokens from the cache")
    assert np.array_equal(again.train, first.train)
    assert not list((tmp_path / "cache" / "scratch").iterdir())


def test_token_files_limits_and_small_text_stay_on_the_sequential_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "ids.npy", np.arange(100, dtype=np.uint16))
    (tmp_path / "t.txt").write_text("x" * 1000)
    registry = nc.Registry()
    ids = open_source(DataSettings(dataset=str(tmp_path / "ids.npy")), registry)
    text = open_source(DataSettings(dataset=str(tmp_path / "t.txt")), registry)
    assert not parallel_tokenize.applies(ids, None, 2)
    assert not parallel_tokenize.applies(text, 1000, 2) and not parallel_tokenize.applies(text, None, 1)
    assert parallel_tokenize.applies(text, None, 2)
    monkeypatch.setattr(parallel_tokenize, "MIN_BYTES", 1001)
    assert not parallel_tokenize.applies(text, None, 2)
    builtin = open_source(DataSettings(dataset="builtin:pydoc"), registry)
    assert not parallel_tokenize.applies(builtin, None, 2)  # 0.5 MB of text, counted as small


def test_ctrl_c_in_a_terminal_stops_the_workers_and_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: exit 130, no process of the run left, no scratch folder."""
    corpus = tmp_path / "big.txt"
    corpus.write_bytes(b"lorem ipsum dolor sit amet\n" * 400_000)  # 10.8 MB: above MIN_BYTES
    script = tmp_path / "run.py"
    script.write_text(announced_train_script("newcompute.train.parallel_tokenize", "_mapped", "MAPPING"))
    env = {**os.environ, "NEWCOMPUTE_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, str(script), str(corpus), str(tmp_path / "run")]
    with subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, start_new_session=True
    ) as process:
        try:
            assert process.stderr is not None
            for line in process.stderr:
                if line.strip() == "MAPPING":
                    break
            time.sleep(1.0)  # the pool's workers are forked and tokenizing
            os.killpg(process.pid, signal.SIGINT)
            code = process.wait(timeout=60)
            rest = process.stderr.read()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert code == 130, rest[-2000:]
    assert "Interrupted (Ctrl-C)." in rest and "Unexpected error" not in rest
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing of the run is left in its process group
    assert not list((tmp_path / "cache").glob("scratch/tokenize-*"))
