"""Data files that are not what they claim are refused naming the file; big ones are read and tokenized in chunks."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tests_support import announced_train_script
from typer.testing import CliRunner

from newcompute.cli.app import build_app
from newcompute.config import DataSettings
from newcompute.core_sources import text_pieces
from newcompute.errors import ConfigError
from newcompute.tokenizer import byte_tokenizer
from newcompute.train import packing
from newcompute.train.packing import TOKENIZE_CHUNK_CHARS, pack, text_chunks
from newcompute.train.sources import open_source

needs_pyarrow = pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")


def _read_all(file: Path) -> list[str]:
    documents = open_source(DataSettings(dataset=str(file))).documents()
    return [d if isinstance(d, str) else "".join(d) for d in documents]


def _train(dataset: Path, tmp_path: Path) -> tuple[int, str]:
    args = ["train", "--dataset", str(dataset), "--steps", "1", "--block-size", "8", "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(build_app(), args)
    return result.exit_code, " ".join(result.output.split())


def test_non_utf8_text_is_refused_naming_the_file_and_byte_offset(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("naïve café".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.txt is not UTF-8 text: byte 0xef at byte offset 2 cannot"):
        _read_all(latin1)
    code, output = _train(latin1, tmp_path)
    assert code == 2 and "latin1.txt is not UTF-8 text" in output and "Unexpected error" not in output


def test_non_utf8_jsonl_counts_the_offset_across_lines(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    first = json.dumps({"text": "fine"}).encode() + b"\n"
    rows.write_bytes(first + b'{"text": "caf\xe9"}\n')
    offset = len(first) + len(b'{"text": "caf')
    with pytest.raises(ConfigError, match=rf"rows\.jsonl is not UTF-8 text: byte 0xe9 at byte offset {offset} "):
        _read_all(rows)
    code, output = _train(rows, tmp_path)
    assert code == 2 and f"byte offset {offset}" in output


def test_offsets_stay_exact_across_read_chunks(tmp_path: Path) -> None:
    file = tmp_path / "t.txt"
    text = "aé€😀b" * 5  # 1-, 2-, 3- and 4-byte characters, so chunks of 4 bytes cut through all of them
    file.write_bytes(text.encode() + b"\xc3(")
    pieces = text_pieces(file, chunk_bytes=4)
    read = ""
    with pytest.raises(ConfigError, match=rf"byte 0xc3 at byte offset {len(text.encode())} "):
        for piece in pieces:
            assert len(piece.encode()) <= 4 + 3
            read += piece
    assert read == text


def test_text_is_read_in_pieces_that_join_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "t.txt"
    text = "".join(chr(c) for c in range(32, 3000)) * 3
    file.write_text(text, encoding="utf-8")
    pieces = list(text_pieces(file, chunk_bytes=1000))
    assert "".join(pieces) == text and len(pieces) > 5
    assert max(len(p.encode()) for p in pieces) <= 1000 + 3  # a character cut by a chunk goes with the next


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello\x00\x01\x02world", "holds a NUL byte at byte offset 5: it looks like a binary file"),
        (np.random.default_rng(0).bytes(4096), "it looks like a binary file|is not UTF-8 text"),
    ],
    ids=["nul-bytes", "random-bytes"],
)
def test_a_binary_txt_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    file = tmp_path / "corpus.txt"
    file.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        _read_all(file)
    code, output = _train(file, tmp_path)
    assert code == 2 and "corpus.txt" in output and "Unexpected error" not in output


@needs_pyarrow
def test_a_garbage_or_truncated_parquet_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not a parquet file, just text that ends in a newline\n")
    with pytest.raises(ConfigError, match=r"garbage\.parquet is not a readable Parquet file \(ArrowInvalid"):
        _read_all(garbage)
    code, output = _train(garbage, tmp_path)
    assert code == 2 and "garbage.parquet is not a readable Parquet file" in output
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"text": ["a document"] * 100}), whole)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(whole.read_bytes()[:-20])
    with pytest.raises(ConfigError, match=r"truncated\.parquet is not a readable Parquet file"):
        _read_all(truncated)


def test_text_chunks_cut_at_line_breaks_then_spaces_and_keep_every_character() -> None:
    text = "one two\nthree four five\nsix"
    chunks = list(text_chunks([text], size=10))
    assert "".join(chunks) == text and all(len(c) <= 10 for c in chunks)
    assert chunks[0] == "one two\n"  # the line break inside the window wins over the space after it
    assert list(text_chunks(["abcdefghij" * 3], size=10)) == ["abcdefghij"] * 3  # no whitespace: a hard cut
    assert list(text_chunks(["ab c", "d e"], size=4)) == ["ab ", "cd e"]  # pieces are joined before cutting


class _Spy:
    """The byte tokenizer, recording the longest text and the most characters it was handed in one call."""

    def __init__(self) -> None:
        self.tokenizer = byte_tokenizer()
        self.longest = self.largest_call = 0

    def __call__(self, texts: list[str], **kwargs: object) -> dict[str, list[list[int]]]:
        self.longest = max(self.longest, *map(len, texts))
        self.largest_call = max(self.largest_call, sum(map(len, texts)))
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)


def test_a_large_single_line_is_tokenized_chunk_by_chunk(tmp_path: Path) -> None:
    file = tmp_path / "one-line.txt"
    line = ("word " * 200_000 + "x" * 70_000).encode()  # ~1 MB and no line break; a run without any space too
    file.write_bytes(line)
    spy = _Spy()
    settings = DataSettings(dataset=str(file), validation_fraction=0.5, validation_max_blocks=10**6)
    corpus = pack(open_source(settings), spy, 1, settings, 0)  # type: ignore[arg-type]
    assert spy.longest <= TOKENIZE_CHUNK_CHARS < len(line)
    assert spy.largest_call <= packing._BATCH_CHARS + TOKENIZE_CHUNK_CHARS
    assert corpus.tokens_read == len(line) + 1 and corpus.documents == 1
    tokens = np.sort(np.concatenate([corpus.train.ravel(), corpus.validation.ravel()]))
    assert np.array_equal(tokens, np.sort(np.append(np.frombuffer(line, np.uint8), 256)))


def test_ctrl_c_while_tokenizing_stops_within_two_seconds(tmp_path: Path) -> None:
    """8 MB on one line takes several seconds to tokenize here (one tokenizer call on it, longer still)."""
    corpus = tmp_path / "big.txt"
    corpus.write_bytes(b"lorem ipsum dolor sit amet " * 300_000)
    script = tmp_path / "run.py"
    script.write_text(announced_train_script("newcompute.train.setup", "pack", "TOKENIZING"))
    args = [sys.executable, str(script), str(corpus), str(tmp_path / "run")]
    with subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as process:
        try:
            assert process.stderr is not None
            for line in process.stderr:
                if line.strip() == "TOKENIZING":
                    break
            time.sleep(0.3)
            process.send_signal(signal.SIGINT)
            sent = time.perf_counter()
            code = process.wait(timeout=30)
            elapsed = time.perf_counter() - sent
            rest = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 130 and elapsed < 2.0, (code, elapsed, rest[-2000:])
    assert [line for line in rest.splitlines() if line.strip()] == ["Interrupted (Ctrl-C)."]


def test_a_token_file_is_read_chunk_by_chunk_and_no_further_than_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing, "IDS_CHUNK", 1000)
    file = tmp_path / "tokens.bin"
    file.write_bytes((np.arange(1_000_000) % 250).astype("<u2").tobytes())  # 2 MB; 4 MB as int32
    settings = DataSettings(dataset=str(file), validation_fraction=0.5)
    source, tokenizer = open_source(settings), byte_tokenizer()
    tracemalloc.start()
    corpus = pack(source, tokenizer, 10, settings, 0, limit=5000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert corpus.tokens_read == 5000 and not corpus.exhausted
    assert sorted(np.concatenate([corpus.train.ravel(), corpus.validation.ravel()])) == sorted(np.arange(5000) % 250)
    assert peak < 500_000, f"reading 5,000 tokens of a memory-mapped file allocated {peak:,} bytes"
