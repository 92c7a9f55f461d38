"""Tokenize and pack: exact blocks, the held-out rule, and the seeded order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest

from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.packing import BlockOrder, pack, split_blocks
from newcompute.train.sources import open_source

EOS = 256


@dataclass(frozen=True)
class Texts:
    texts: tuple[str, ...]
    description: str = "test texts"
    bounded: bool = True

    def documents(self):
        yield from self.texts


def test_documents_are_joined_by_eos_and_cut_into_blocks() -> None:
    corpus = pack(Texts(("ab", "cdé", "f")), byte_tokenizer(), 3, DataSettings(validation_fraction=0.5), seed=0)
    # bytes: a b EOS c d 0xC3 0xA9 EOS f EOS → three blocks of 3, the last token dropped
    blocks = [[97, 98, EOS], [99, 100, 0xC3], [0xA9, EOS, 102]]
    # fraction 0.5 → every 2nd block from offset 0 % 2 = 0: blocks 0 and 2 are held out
    assert corpus.validation.tolist() == [blocks[0], blocks[2]]
    assert corpus.train.tolist() == [blocks[1]]
    assert (corpus.tokens_read, corpus.documents, corpus.exhausted) == (10, 3, True)
    assert corpus.train.dtype == np.int32


def test_a_limit_cuts_the_stream_exactly() -> None:
    corpus = pack(Texts(("abcdef", "ghij")), byte_tokenizer(), 2, DataSettings(validation_fraction=0.5), 1, limit=5)
    # "abcdef" + EOS already reaches 5 tokens, so the second document is never read: a b c d e → 2 blocks
    assert (corpus.tokens_read, corpus.documents, corpus.exhausted) == (5, 1, False)
    assert corpus.validation.tolist() == [[99, 100]] and corpus.train.tolist() == [[97, 98]]


def test_validation_rule_takes_every_period_th_block_from_the_seeded_offset() -> None:
    blocks = np.arange(10).reshape(10, 1)
    train, held = split_blocks(blocks, DataSettings(validation_fraction=0.25, validation_max_blocks=2), seed=5)
    # period round(1 / 0.25) = 4, offset 5 % 4 = 1: blocks 1, 5, 9 qualify, the cap keeps 1 and 5
    assert held.ravel().tolist() == [1, 5]
    assert train.ravel().tolist() == [0, 2, 3, 4, 6, 7, 8, 9]


def test_held_out_blocks_do_not_depend_on_how_much_was_read() -> None:
    settings = DataSettings(validation_fraction=0.1, validation_max_blocks=3)
    stream = np.arange(100).reshape(100, 1)
    _, few = split_blocks(stream[:40], settings, seed=3)
    _, many = split_blocks(stream, settings, seed=3)
    assert few.ravel().tolist() == many.ravel().tolist() == [3, 13, 23]


def test_too_little_text_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"gives 4 tokens, fewer than two blocks of 8 .* smaller --block-size"):
        pack(Texts(("abc",)), byte_tokenizer(), 8, DataSettings(), 0)


def test_builtin_corpus_packs_to_its_utf8_bytes_quickly() -> None:
    started = time.perf_counter()
    corpus = pack(open_source(DataSettings()), byte_tokenizer(), 256, DataSettings(), 0)
    elapsed = time.perf_counter() - started
    expected = np.concatenate([np.frombuffer(topics[n].encode() + bytes([0]), np.uint8) for n in sorted(topics)])
    expected = expected.astype(np.int64)
    expected[np.cumsum([len(topics[n].encode()) + 1 for n in sorted(topics)]) - 1] = EOS
    count = expected.size // 256
    assert corpus.tokens_read == expected.size
    rebuilt = np.zeros((count, 256), dtype=np.int64)
    rebuilt[np.arange(count) % 20 == 0] = corpus.validation[: (count + 19) // 20]
    rebuilt[np.arange(count) % 20 != 0] = corpus.train
    assert np.array_equal(rebuilt.ravel(), expected[: count * 256])
    assert elapsed < 10, f"packing the built-in corpus took {elapsed:.1f} s"


def test_block_order_is_a_fresh_permutation_each_epoch_and_seeded() -> None:
    order = BlockOrder(blocks=7, seed=11)
    first_epochs = order.indices(0, 21)
    for epoch in range(3):
        assert sorted(first_epochs[7 * epoch : 7 * epoch + 7].tolist()) == list(range(7))
    assert first_epochs[:7].tolist() != first_epochs[7:14].tolist()
    assert BlockOrder(7, 11).indices(5, 9).tolist() == first_epochs[5:14].tolist()
    assert BlockOrder(7, 12).indices(0, 7).tolist() != first_epochs[:7].tolist()


def test_local_folder_corpus(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("x" * 10)
    corpus = pack(open_source(DataSettings(dataset=str(tmp_path))), byte_tokenizer(), 4, DataSettings(), 0)
    assert corpus.tokens_read == 11 and corpus.train.shape == (1, 4) and corpus.validation.tolist() == [[120] * 4]
