"""Turning documents into fixed-length training blocks, a held-out split and a seeded order.

Documents are tokenized with the model's tokenizer (a document of token
ids is taken as it is), joined with its end-of-text token and cut into
``block_size`` blocks (the tail that does not fill a block is dropped), as
HF's ``run_clm`` and NewComputeBench do. Text is tokenized in bounded
chunks, so neither a huge document nor Ctrl-C has to wait for one
tokenizer call on all of it. The
validation blocks are every ``period``-th block from an offset chosen by the
seed, capped at ``validation_max_blocks``. Because the rule looks at block
positions only, the held-out set does not depend on how much of a source a
run reads beyond them, so runs of different lengths are compared on the
same text and ``newcompute eval`` rebuilds exactly the set a run used.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from transformers import PreTrainedTokenizerBase

from newcompute.config import DataSettings
from newcompute.datasource import Document
from newcompute.errors import ConfigError
from newcompute.train import parallel_tokenize, token_cache
from newcompute.train.sources import TextSource

T = TypeVar("T")

TOKENIZE_CHUNK_CHARS = 1 << 16
"""The most characters the tokenizer sees in one text: a long document is tokenized in pieces of this size,
cut after a line break or a space where there is one, so its tokenizing memory does not grow with it."""
_BATCH_CHARS = 1 << 18
"""Characters per tokenizer call (several pieces at once run in parallel): a call takes a fraction of a
second, which bounds how long Ctrl-C waits, since Python handles signals only between calls."""
_BATCH_PIECES = 512
IDS_CHUNK = 1 << 22
"""Token ids read (and checked, and converted) at a time from a document of ids, such as a memory-mapped token
file: what it costs in memory beyond the tokens kept, and how far a ``--max-tokens`` read goes past the limit."""


@dataclass(frozen=True)
class PackedCorpus:
    """Token blocks of one source: ``blocks`` and ``validation`` are ``(blocks, block_size)`` int32 arrays, and
    the train blocks are the rows ``train_rows`` of ``blocks``.

    The train blocks are not copied out of ``blocks``, which for tokens from
    the cache is the memory-mapped cache file: a run on 100 MB of text would
    otherwise copy 400 MB before its first step.
    """

    blocks: np.ndarray
    train_rows: np.ndarray
    validation: np.ndarray
    block_size: int
    tokens_read: int
    documents: int
    exhausted: bool
    separator: str
    tokenized: str = "tokenized now"
    """Whether the tokens were read from the token cache or tokenized now, and why, for the run's summary."""

    @property
    def train(self) -> np.ndarray:
        """The train blocks, copied out in order."""
        return self.blocks[self.train_rows]

    @property
    def train_tokens(self) -> int:
        return int(self.train_rows.size * self.block_size)


def validation_period(fraction: float) -> int:
    return max(2, round(1.0 / fraction))


def text_chunks(pieces: Iterable[str], size: int = TOKENIZE_CHUNK_CHARS) -> Iterator[str]:
    """The text of ``pieces`` again, as chunks of at most ``size`` characters.

    A chunk ends after the last line break in its window, else after the
    last space, else at ``size``: tokenizers split words at whitespace, so
    cutting there gives (almost always exactly) the tokens of the whole text.
    """
    buffer = ""
    for piece in pieces:
        buffer += piece  # what is left over from the last piece is shorter than a chunk
        start = 0
        while len(buffer) - start > size:
            end = start + size
            cut = buffer.rfind("\n", start, end) + 1 or buffer.rfind(" ", start, end) + 1 or end
            yield buffer[start:cut]
            start = cut
        buffer = buffer[start:]
    if buffer:
        yield buffer


@dataclass
class Unit:
    """A chunk of a document's text or of its token ids, and whether the document ends with it."""

    text: str | None
    ids: np.ndarray | None
    last: bool


def document_units(documents: Iterable[Document], where: str) -> Iterator[Unit]:
    """The chunks every path tokenizes (here, ``--streaming``, datasets.map), each on its own: the same chunks
    give the same tokens whichever path, batch or process tokenizes them."""
    for document in documents:
        if isinstance(document, (str, Iterator)):
            texts = text_chunks([document] if isinstance(document, str) else document)
            yield from (Unit(chunk, None, last) for chunk, last in with_last(texts, ""))
        else:
            chunks = _id_chunks(_flat_ids(document, where))
            yield from (Unit(None, chunk, last) for chunk, last in with_last(chunks, np.zeros(0, np.int32)))


def with_last(items: Iterator[T], empty: T) -> Iterator[tuple[T, bool]]:
    """Each item and whether it is the last one; ``empty`` (as the last) when there are none."""
    previous = next(items, empty)
    for item in items:
        yield previous, False
        previous = item
    yield previous, True


def _flat_ids(document: Any, where: str) -> np.ndarray:
    """The document as an array, not yet read: a memory-mapped file stays on disk until its chunks are."""
    ids = np.asarray(document)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ConfigError(
            f"{where} gave a document of token ids that is not a flat sequence of integers "
            f"(shape {ids.shape}, dtype {ids.dtype})."
        )
    return ids


def _id_chunks(ids: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, ids.size, IDS_CHUNK):
        yield ids[start : start + IDS_CHUNK]


def _checked_ids(ids: np.ndarray, vocab: int, where: str) -> np.ndarray:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ConfigError(
            f"{where} gave token id {int(ids.max() if ids.max() >= vocab else ids.min())}, outside the "
            f"tokenizer's {vocab} ids (0–{vocab - 1}): token ids must come from the model's own tokenizer."
        )
    return ids.astype(np.int32)


def unit_batches(units: Iterable[Unit]) -> Iterator[list[Unit]]:
    """Units in order, grouped so that a group's text stays under ``_BATCH_CHARS``."""
    return batched(units, lambda unit: unit.text)


def batched(items: Iterable[T], text: Callable[[T], str | None]) -> Iterator[list[T]]:
    """Items in order, grouped as :func:`unit_batches` groups their units (``text`` says an item's text), so
    that whoever tokenizes them makes the same tokenizer calls."""
    batch: list[T] = []
    chars = 0
    for item in items:
        batch.append(item)
        chars += len(text(item) or "")
        if chars >= _BATCH_CHARS or len(batch) >= _BATCH_PIECES:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def tokenize_batch(batch: list[Unit], tokenizer: PreTrainedTokenizerBase, where: str) -> Iterator[np.ndarray]:
    """Each unit's tokens, in order; the ids of a chunk are read and checked only when it is reached."""
    texts = [unit.text for unit in batch if unit.text is not None]
    encoded = iter(
        tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    for unit in batch:
        if unit.ids is None:
            yield np.asarray(next(encoded), dtype=np.int32)
        else:
            yield _checked_ids(unit.ids, len(tokenizer), where)


def _token_stream(
    source: TextSource, tokenizer: PreTrainedTokenizerBase, limit: int | None
) -> tuple[np.ndarray, int, bool]:
    """The source's tokens (at most ``limit``), how many documents were read, and whether it ran out."""
    eos = np.asarray([] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id], dtype=np.int32)
    pieces: list[np.ndarray] = []
    total = documents = 0
    for batch in unit_batches(document_units(source.documents(), source.description)):
        for unit, ids in zip(batch, tokenize_batch(batch, tokenizer, source.description)):
            pieces.append(ids)
            total += ids.size
            if unit.last:
                documents += 1
                pieces.append(eos)
                total += eos.size
            if limit is not None and total >= limit:
                return _joined(pieces, limit), documents, False
    return _joined(pieces, limit), documents, True


def _joined(pieces: list[np.ndarray], limit: int | None) -> np.ndarray:
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return stream[:limit] if limit is not None else stream


def split_rows(count: int, settings: DataSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` rows of ``count`` blocks: validation takes every period-th block from a seeded
    offset, up to the cap; train the others, in order."""
    period = validation_period(settings.validation_fraction)
    offset = seed % min(period, count)
    held = np.arange(offset, count, period)[: settings.validation_max_blocks]
    keep = np.ones(count, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), held


def split_blocks(blocks: np.ndarray, settings: DataSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` blocks, split by :func:`split_rows`."""
    train, held = split_rows(blocks.shape[0], settings, seed)
    return blocks[train], blocks[held]


def pack(
    source: TextSource,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    settings: DataSettings,
    seed: int,
    limit: int | None = None,
    processes: int = 1,
) -> PackedCorpus:
    """Read, tokenize and pack ``source``; ``limit`` caps the tokens read (None reads it all).

    ``processes`` is how many processes may tokenize a whole local text corpus at once (with datasets.map,
    when datasets is installed); the tokens are the same whatever the number.
    """
    stream, documents, exhausted, tokenized = _cached_token_stream(source, tokenizer, settings, limit, processes)
    count = stream.size // block_size
    if count < 2:
        raise ConfigError(
            f"{source.description} gives {stream.size:,} tokens, fewer than two blocks of {block_size} "
            "(one to train on, one to validate): use more text or a smaller --block-size."
        )
    blocks = stream[: count * block_size].reshape(count, block_size)
    train, held = split_rows(count, settings, seed)
    separator = "end-of-text token" if tokenizer.eos_token_id is not None else "nothing (no end-of-text token)"
    return PackedCorpus(
        blocks, train, blocks[held], block_size, int(stream.size), documents, exhausted, separator, tokenized
    )


def _fresh_token_stream(
    source: TextSource, tokenizer: PreTrainedTokenizerBase, settings: DataSettings, limit: int | None, processes: int
) -> tuple[np.ndarray, int, bool, str]:
    """The tokens tokenized now: by datasets.map over ``processes`` where that applies, else here."""
    if parallel_tokenize.applies(source, limit, processes):
        scratch = token_cache.cache_folder().parent / "scratch" if settings.cache else Path(tempfile.gettempdir())
        units = document_units(source.documents(), source.description)
        found = parallel_tokenize.tokenize(units, tokenizer, processes, scratch)
        return found.tokens, found.documents, True, f"tokenized now with datasets.map over {processes} processes"
    stream, documents, exhausted = _token_stream(source, tokenizer, limit)
    return stream, documents, exhausted, "tokenized now"


def _cached_token_stream(
    source: TextSource, tokenizer: PreTrainedTokenizerBase, settings: DataSettings, limit: int | None, processes: int
) -> tuple[np.ndarray, int, bool, str]:
    """The token stream through the token cache, and a phrase saying which of the two gave the tokens."""
    key = token_cache.cache_key(source, tokenizer, settings, limit) if settings.cache else None
    if key is not None and (hit := token_cache.load(key)) is not None:
        return hit.tokens, hit.documents, hit.exhausted, f"tokens from the cache ({token_cache.cache_folder()})"
    stream, documents, exhausted, how = _fresh_token_stream(source, tokenizer, settings, limit, processes)
    if not settings.cache:
        return stream, documents, exhausted, f"{how} (cache off)"
    if key is None:
        return stream, documents, exhausted, f"{how} (this source or tokenizer has no fingerprint to cache by)"
    problem = token_cache.save(key, token_cache.CachedStream(stream, documents, exhausted))
    where = token_cache.cache_folder()
    note = f"{how} and cached in {where}" if problem is None else f"{how}; not cached ({problem})"
    return stream, documents, exhausted, note


@dataclass
class BlockOrder:
    """Which training block is the ``n``-th sample: a fresh seeded permutation every epoch.

    Sample ``n`` depends only on ``(seed, n)``, so the data position of a
    run is one integer and a resumed run sees exactly the blocks it would
    have seen.
    """

    blocks: int
    seed: int
    _epoch: int = field(default=-1, repr=False)
    _permutation: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.blocks)
            self._epoch = epoch
        return self._permutation

    def indices(self, start: int, count: int) -> np.ndarray:
        return np.fromiter(self._walk(start, count), dtype=np.int64, count=count)

    def _walk(self, start: int, count: int) -> Iterator[int]:
        for sample in range(start, start + count):
            epoch, position = divmod(sample, self.blocks)
            yield int(self._order(epoch)[position])

