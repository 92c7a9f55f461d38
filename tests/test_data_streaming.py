"""--streaming: the same tokens as packing, in stream order, read only as far as needed, resumable mid-chunk."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import newcompute as nc
from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.sources import open_source
from newcompute.train.streaming import StreamCounters, StreamedBlocks, StreamPosition, read_head, stream_blocks

EOS = 256


def _expected_stream(documents: list[str]) -> np.ndarray:
    """The byte tokenizer's tokens, computed independently: each document's UTF-8 bytes, then end-of-text."""
    return np.asarray([t for doc in documents for t in [*doc.encode("utf-8"), EOS]], dtype=np.int32)


def _jsonl(path: Path, documents: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents), encoding="utf-8")
    return path


def _documents(count: int) -> list[str]:
    return [f"document {i} says " + "é ab " * (i % 7) for i in range(count)]


def _streamed(
    dataset: Path, block: int, validation: int = 2, **settings: object
) -> tuple[DataSettings, StreamedBlocks]:
    data = DataSettings(dataset=str(dataset), streaming=True, validation_max_blocks=validation, **settings)
    source = open_source(data, nc.Registry())
    head = read_head(source, byte_tokenizer(), block, data)
    return data, StreamedBlocks(source, byte_tokenizer(), block, data, head)


def test_stream_is_the_token_stream_cut_into_blocks_with_the_head_held_out(tmp_path: Path) -> None:
    documents = _documents(40)
    dataset = _jsonl(tmp_path / "docs.jsonl", documents)
    expected = _expected_stream(documents)
    block = 16
    count = expected.size // block
    blocks = expected[: count * block].reshape(count, block)
    _, stream = _streamed(dataset, block, validation=3)
    assert np.array_equal(stream.head.validation, blocks[:3])
    train = count - 3
    # Two passes: the second epoch starts again right after the head, in the same order.
    taken = stream.take(0, 2 * train)
    assert np.array_equal(taken, np.concatenate([blocks[3:], blocks[3:]]))


def test_a_position_resumes_mid_chunk_with_exactly_the_following_blocks(tmp_path: Path) -> None:
    documents = _documents(30)
    dataset = _jsonl(tmp_path / "docs.jsonl", documents)
    source = open_source(DataSettings(dataset=str(dataset)), nc.Registry())
    tokenizer = byte_tokenizer()
    every = list(stream_blocks(source, tokenizer, 24, StreamPosition(), None))
    assert any(position.offset for _, position in every), "some block must end inside a document"
    for cut in (1, 5, len(every) // 2, len(every) - 2):
        position = every[cut - 1][1]
        resumed = [block for block, _ in stream_blocks(source, tokenizer, 24, position, None)]
        assert len(resumed) == len(every) - cut
        assert all(np.array_equal(a, b) for a, (b, _) in zip(resumed, every[cut:]))


def test_state_and_restore_continue_where_the_stream_stopped(tmp_path: Path) -> None:
    dataset = _jsonl(tmp_path / "docs.jsonl", _documents(50))
    _, straight = _streamed(dataset, 16)
    expected = straight.take(0, 60)  # more than one epoch
    _, first = _streamed(dataset, 16)
    first.take(0, 7)
    saved = json.loads(json.dumps(first.state(10)))  # through the checkpoint's JSON
    _, second = _streamed(dataset, 16)
    second.restore(saved, 10)
    assert np.array_equal(second.take(10, 50), expected[10:])
    assert saved["state"]["byte"] > 0 and second.counters.skipped_units == 0  # reopened at the position's line
    with pytest.raises(ConfigError, match="no stream position for sample 12"):
        second.restore(saved, 12)
    (dataset).write_text((dataset).read_text() + json.dumps({"text": "one more"}) + "\n")
    _, changed = _streamed(dataset, 16)
    with pytest.raises(ConfigError, match=r"docs.jsonl.*changed since the checkpoint"):
        changed.restore(saved, 10)


def test_a_resume_skips_the_files_before_its_position_unread(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard in range(3):
        _jsonl(folder / f"{shard}.jsonl", [f"shard {shard} " + doc for doc in _documents(12)])
    source = open_source(DataSettings(dataset=str(folder)), nc.Registry())
    every = list(stream_blocks(source, byte_tokenizer(), 16, StreamPosition(), None))
    cut = next(n for n, (_, p) in enumerate(every) if p.target == 2 and p.offset and p.state_unit > 2) + 1
    position = every[cut - 1][1]
    (folder / "0.jsonl").write_bytes(b"\xff not text")  # were it read again, it would be refused
    (folder / "1.jsonl").write_bytes(b"\xff not text")
    third = (folder / "2.jsonl").read_bytes()  # and its lines before the position's, too
    (folder / "2.jsonl").write_bytes(b"\xff" * position.state["byte"] + third[position.state["byte"] :])
    counters = StreamCounters()
    resumed = [block for block, _ in stream_blocks(source, byte_tokenizer(), 16, position, None, counters)]
    assert len(resumed) == len(every) - cut
    assert all(np.array_equal(a, b) for a, (b, _) in zip(resumed, every[cut:]))
    assert counters.skipped_units == 0


def test_a_source_that_cannot_be_reopened_is_read_again_up_to_the_position_untokenized() -> None:
    source = open_source(DataSettings(dataset="builtin:pydoc"), nc.Registry())
    every = list(itertools.islice(stream_blocks(source, byte_tokenizer(), 512, StreamPosition(), None), 400))
    for cut in (150, 399):
        position = every[cut - 1][1]
        assert position.byte is None and position.state is None and position.unit > 0
        counters = StreamCounters()
        resumed = stream_blocks(source, byte_tokenizer(), 512, position, None, counters)
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(resumed, every[cut:]))
        assert counters.skipped_units == position.unit


def test_streaming_reads_only_what_the_run_consumes(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    line = "a line of text that repeats many times over, to make a file far larger than a few blocks\n"
    with big.open("w", encoding="utf-8") as out:
        for _ in range(4_000_000 // len(line)):
            out.write(line)
    size = big.stat().st_size
    _, stream = _streamed(big, 32)
    blocks = stream.take(0, 4)
    assert blocks.shape == (4, 32)
    assert np.array_equal(blocks[0], np.frombuffer(line.encode() * 2, np.uint8)[64:96].astype(np.int32))
    # The byte tokenizer gives one token per byte: the stream tokenized a bounded batch, not the 4 MB file.
    assert stream.counters.tokens < size // 10


def test_max_tokens_caps_each_pass(tmp_path: Path) -> None:
    documents = _documents(40)
    dataset = _jsonl(tmp_path / "docs.jsonl", documents)
    blocks = _expected_stream(documents)[:160].reshape(10, 16)
    _, stream = _streamed(dataset, 16, max_tokens=170)
    assert np.array_equal(stream.take(0, 16), np.concatenate([blocks[2:], blocks[2:]]))


def test_a_stream_too_short_for_its_head_is_refused(tmp_path: Path) -> None:
    dataset = _jsonl(tmp_path / "docs.jsonl", ["short"] * 3)
    with pytest.raises(ConfigError, match="holds out the first 4 .*validation_max_blocks.* needs at least one more"):
        _streamed(dataset, 4, validation=4)


def test_chunks_of_a_large_text_document_split_like_packing(tmp_path: Path) -> None:
    text = tmp_path / "long.txt"
    content = "".join(f"line {i} " + "word " * (i % 13) + "\n" for i in range(30_000))
    text.write_text(content, encoding="utf-8")
    data = DataSettings(dataset=str(text))
    source = open_source(data, nc.Registry())
    blocks = stream_blocks(source, byte_tokenizer(), 64, StreamPosition(), None)
    streamed = np.concatenate([block for block, _ in itertools.islice(blocks, 5000)])
    expected = _expected_stream([content])
    assert np.array_equal(streamed, expected[: streamed.size])


def test_eval_of_a_streamed_run_scores_the_same_head(tmp_path: Path) -> None:
    from test_train_paradigms import make_registry, quiet, tiny_run

    from newcompute.train import train
    from newcompute.train.evaluation import evaluate_model, load_run_for_eval

    run = tiny_run(tmp_path / "run", steps=3)
    run.data.streaming, run.data.max_tokens = True, 1024
    registry = make_registry()
    result = train(run, registry, console=quiet())
    target = load_run_for_eval(tmp_path / "run", registry=registry)
    assert target.corpus.validation.shape == (4, 32)
    assert evaluate_model(target) == result.final
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= summary["data_wait_fraction"] < 1.0 and summary["data_wait_s"] >= 0.0


def test_a_hub_dataset_is_streamed_through_load_dataset_and_read_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[dict[str, object]] = []
    served: list[int] = []

    def rows() -> Iterator[dict[str, str]]:
        for number in itertools.count():  # a stream without end, as a large hub dataset is to a run
            served.append(number)
            yield {"text": f"hub row {number} " + "x" * (number % 9)}

    def load_dataset(name: str, config: str | None, split: str, streaming: bool) -> Iterator[dict[str, str]]:
        calls.append({"name": name, "config": config, "split": split, "streaming": streaming})
        return rows()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = DataSettings(dataset="org/corpus", config_name="small", streaming=True, validation_max_blocks=2)
    source = open_source(data, nc.Registry())
    assert not source.bounded and "(streamed)" in source.description
    stream = StreamedBlocks(source, byte_tokenizer(), 16, data, read_head(source, byte_tokenizer(), 16, data))
    taken = stream.take(0, 3)
    assert calls == [{"name": "org/corpus", "config": "small", "split": "train", "streaming": True}]
    expected = _expected_stream([f"hub row {n} " + "x" * (n % 9) for n in range(len(served))])
    assert np.array_equal(taken, expected[32:80].reshape(3, 16))
    assert len(served) < 600  # one bounded batch of rows, not the endless stream


def _text_corpus(path: Path) -> str:
    """Several chunks of text whose characters take one to four bytes, so that bytes and characters differ."""
    content = "".join(f"line {i} é€𝄞 " + "word " * (i % 11) + "\n" for i in range(12_000))
    path.write_text(content, encoding="utf-8")
    return content


def test_a_text_file_resumes_at_the_byte_of_its_chunk_without_reading_what_precedes(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    content = _text_corpus(big)
    source = open_source(DataSettings(dataset=str(big)), nc.Registry())
    every = list(stream_blocks(source, byte_tokenizer(), 256, StreamPosition(), None))
    expected = _expected_stream([content])  # the byte tokenizer: token n is byte n of the file
    assert np.array_equal(np.concatenate([block for block, _ in every]), expected[: len(every) * 256])
    cuts = [n for n, (_, position) in enumerate(every, start=1) if position.unit > 2][:: len(every) // 5]
    assert len(cuts) >= 3 and all(every[n - 1][1].offset for n in cuts), "resume inside later chunks"
    for cut in cuts:
        position = every[cut - 1][1]
        # The next block begins offset tokens (bytes) into the chunk that starts at byte `byte`.
        assert position.byte is not None and position.byte + position.offset == cut * 256
        damaged = tmp_path / f"damaged{cut}.txt"  # the same file with every byte before the chunk no longer text
        damaged.write_bytes(b"\xff" * position.byte + big.read_bytes()[position.byte :])
        reopened = open_source(DataSettings(dataset=str(damaged)), nc.Registry())
        counters = StreamCounters()
        resumed = list(stream_blocks(reopened, byte_tokenizer(), 256, position, None, counters))
        assert counters.skipped_units == 0
        assert [p for _, p in resumed] == [p for _, p in every[cut:]]
        assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(resumed, every[cut:], strict=True))


def test_a_position_without_a_byte_from_an_older_checkpoint_resumes_by_skipping(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    _text_corpus(big)
    _, straight = _streamed(big, 1024)
    expected = straight.take(0, 260)
    _, first = _streamed(big, 1024)
    saved = json.loads(json.dumps(first.state(240)))
    assert saved["byte"] is not None and saved["unit"] > 0
    old = {key: value for key, value in saved.items() if key not in ("byte", "state", "state_unit")}
    _, second = _streamed(big, 1024)
    second.restore(old, 240)
    assert np.array_equal(second.take(240, 20), expected[240:])
    assert second.counters.skipped_units == saved["unit"]  # it read the chunks before the position again


def test_text_files_resume_at_blocks_that_end_with_a_file_an_empty_file_or_a_chunk(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    documents = ["x" * 31, "y" * 14, "", ("ü" * 999 + "\n") * 70, "tail " * 9]
    for name, text in zip("abcde", documents):
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    # With the end-of-text tokens: a.txt fills blocks 1-2, b.txt and the empty c.txt fill block 3 exactly, and
    # d.txt is two chunks (70,000 characters, 140,000 bytes).
    source = open_source(DataSettings(dataset=str(folder)), nc.Registry())
    every = list(stream_blocks(source, byte_tokenizer(), 16, StreamPosition(), None))
    expected = _expected_stream(documents)
    assert np.array_equal(np.concatenate([block for block, _ in every]), expected[: len(every) * 16])
    assert every[1][1].byte == 31 and every[2][1].byte == 0, "blocks 2 and 3 end with a file: past its end"
    in_d = [n for n in range(1, len(every)) if every[n - 1][1].target == 3]
    second_chunk = next(n for n in in_d if every[n - 1][1].unit == 1)
    cuts = [n for n in range(1, len(every)) if n not in in_d] + [in_d[0], second_chunk - 1, second_chunk, in_d[-1]]
    for cut in cuts:
        counters = StreamCounters()
        resumed = [block for block, _ in stream_blocks(source, byte_tokenizer(), 16, every[cut - 1][1], None, counters)]
        assert counters.skipped_units == 0
        assert len(resumed) == len(every) - cut
        assert all(np.array_equal(a, b) for a, (b, _) in zip(resumed, every[cut:]))


def test_a_streamed_hub_dataset_resumes_from_its_state_dict_without_reading_rows_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [f"hub row {n} " + "ab " * (n % 13) for n in range(300)]
    rows[40] = "a long row " + "word " * 14_000  # two chunks: a resume in the second skips only the first
    files = _jsonl(tmp_path / "rows.jsonl", rows)
    load = datasets.load_dataset
    loads: list[str] = []

    def load_dataset(name: str, config: str | None, split: str, streaming: bool) -> object:
        # The hub id's own code path, with a local JSON-lines file standing in for the hub repository.
        loads.append(name)
        return load("json", data_files=str(files), split=split, streaming=streaming)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = DataSettings(dataset="org/corpus", streaming=True, validation_max_blocks=2)
    source = open_source(data, nc.Registry())

    def stream() -> StreamedBlocks:
        return StreamedBlocks(source, byte_tokenizer(), 64, data, read_head(source, byte_tokenizer(), 64, data))

    expected = _expected_stream(rows)
    straight = stream().take(0, 1250)  # the stream's 1,235 train blocks, then the next epoch's first
    assert np.array_equal(straight[:1235].reshape(-1), expected[128 : 128 + 1235 * 64])
    in_row = []
    for sample in (1, 300, 1100, 1150):  # before the long row, in its two chunks, after it
        first = stream()
        saved = json.loads(json.dumps(first.state(sample)))  # through the checkpoint's JSON
        assert saved["state"] is not None and saved["files"] is None
        second = stream()
        skipped_before = second.counters.skipped_units
        second.restore(saved, sample)
        assert np.array_equal(second.take(sample, 100), straight[sample : sample + 100])
        assert second.counters.skipped_units - skipped_before == saved["unit"] - saved["state_unit"]  # in its row
        in_row.append(saved["unit"] - saved["state_unit"])
    assert in_row == [0, 0, 1, 0] and set(loads) == {"org/corpus"}


def test_a_hub_stream_state_that_the_dataset_can_no_longer_load_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    rows = ({"text": f"row {n}"} for n in range(10**6))
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: rows)  # a plain iterator keeps no state
    data = DataSettings(dataset="org/corpus", streaming=True, validation_max_blocks=2)
    source = open_source(data, nc.Registry())
    stream = StreamedBlocks(source, byte_tokenizer(), 16, data, read_head(source, byte_tokenizer(), 16, data))
    saved = {**stream.state(3), "state": {"epoch": 0}, "state_unit": 5}
    stream.restore(saved, 3)
    with pytest.raises(ConfigError, match=r"stream of hub dataset org/corpus stood .* datasets>=2\.18"):
        stream.take(3, 1)
