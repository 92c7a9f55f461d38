"""``--streaming``: training blocks tokenized and packed as the run consumes them, never the whole corpus.

The stream is the same token stream :func:`newcompute.train.packing.pack`
builds (documents tokenized in the same chunks, joined by the end-of-text
token), cut into ``block_size`` blocks in the order they come. What differs
is that it is never held: a bounded batch of text is tokenized when the run
needs more blocks, so a run starts after its first blocks, on a corpus of
any size, local or on the hub.

Validation is a fixed head of the stream: its first
``validation_max_blocks`` blocks are held out (and kept in memory) and
training starts on the block after them. The head does not depend on the
length of the run, so ``newcompute eval`` rebuilds it exactly. When the
stream ends (or reaches ``--max-tokens``) the next epoch starts again after
the head, in the same order.

Samples are taken in stream order: sample ``n`` of the run is train block
``n``, so the data position of a run is where the stream stands after its
last step. That position (:class:`StreamPosition`: the epoch, the blocks
emitted, the file and the text chunk the next block starts in, and how
many of that chunk's tokens were already used) is saved in every
checkpoint; a resumed run skips the files before it unread, re-reads that
file up to the chunk without tokenizing it, tokenizes from there, and
continues with exactly the blocks it would have seen.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.train import token_cache
from newcompute.train.packing import document_units, tokenize_batch, unit_batches
from newcompute.datasource import Document
from newcompute.train.sources import ResolvedSource, TextSource


@dataclass(frozen=True)
class StreamPosition:
    """Where the stream stands: what the next block is made of, in one epoch's pass over the source.

    ``target`` is the file (or other target) of the source the next block
    starts in, ``unit`` counts that target's chunks of text (or of token
    ids) wholly used before it, ``offset`` the tokens of chunk ``unit``
    already used, ``blocks`` the blocks emitted in this epoch, validation
    head included.
    """

    epoch: int = 0
    blocks: int = 0
    target: int = 0
    unit: int = 0
    offset: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> StreamPosition:
        return cls(**{key: int(saved[key]) for key in ("epoch", "blocks", "target", "unit", "offset")})


@dataclass
class StreamCounters:
    """What a stream has done so far: tokens it tokenized (or read as ids) and chunks it skipped on a resume."""

    tokens: int = 0
    skipped_units: int = 0


def _parts(source: TextSource) -> tuple[int, Callable[[int], Iterator[Document]]]:
    """How many targets the source reads, and the documents of one: a resolved source's files one by one, so
    a resume skips whole files unread; any other source as one part."""
    if isinstance(source, ResolvedSource):
        return len(source.targets), source.target_documents
    return 1, lambda _: source.documents()


def stream_blocks(
    source: TextSource,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    start: StreamPosition,
    limit: int | None,
    counters: StreamCounters | None = None,
) -> Iterator[tuple[np.ndarray, StreamPosition]]:
    """The blocks of ``source`` from ``start`` on, each with the position after it; ends with the source.

    ``limit`` caps the tokens of one pass (counted from the source's start), as ``--max-tokens`` does.
    """
    counters = counters if counters is not None else StreamCounters()
    eos = np.asarray([] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id], dtype=np.int32)
    where = source.description
    count, documents = _parts(source)
    pending: deque[list[Any]] = deque()  # [(target, unit), its tokens, how many of them are used]
    held, blocks, skip = 0, start.blocks, start.offset
    for target in range(start.target, count):
        units = document_units(documents(target), where)
        index = start.unit if target == start.target else 0
        for _ in itertools.islice(units, index):
            counters.skipped_units += 1
        for batch in unit_batches(units):
            for unit, ids in zip(batch, tokenize_batch(batch, tokenizer, where)):
                tokens = np.concatenate([ids, eos]) if unit.last else ids
                counters.tokens += tokens.size
                pending.append([(target, index), tokens, skip])
                held += tokens.size - skip
                index, skip = index + 1, 0
                while held >= block_size:
                    if limit is not None and (blocks + 1) * block_size > limit:
                        return
                    block = _take(pending, block_size)
                    held -= block_size
                    blocks += 1
                    (at_target, at_unit), used = (pending[0][0], pending[0][2]) if pending else ((target, index), 0)
                    yield block, StreamPosition(start.epoch, blocks, at_target, at_unit, used)


def _take(pending: deque[list[Any]], count: int) -> np.ndarray:
    """The next ``count`` unused tokens of ``pending``, dropping the chunks they use up."""
    parts: list[np.ndarray] = []
    while count:
        entry = pending[0]
        tokens, used = entry[1], entry[2]
        part = tokens[used : used + count]
        parts.append(part)
        count -= part.size
        entry[2] = used + part.size
        if entry[2] == tokens.size:
            pending.popleft()
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


@dataclass
class StreamHead:
    """The held-out head of a stream, the position just after it (where every epoch of training starts), and
    the stream going on from there, so that a new run tokenizes its first blocks once."""

    validation: np.ndarray
    train_start: StreamPosition
    rest: Iterator[tuple[np.ndarray, StreamPosition]] | None
    counters: StreamCounters


def read_head(
    source: TextSource,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    settings: DataSettings,
    counters: StreamCounters | None = None,
) -> StreamHead:
    """The first ``validation_max_blocks`` blocks, refusing a stream that has no train block after them."""
    wanted = settings.validation_max_blocks
    counters = counters if counters is not None else StreamCounters()
    blocks = stream_blocks(source, tokenizer, block_size, StreamPosition(), settings.max_tokens, counters)
    head: list[np.ndarray] = []
    after = StreamPosition()
    for block, after in itertools.islice(blocks, wanted):
        head.append(block)
    first = next(blocks, None)
    if first is None:
        raise ConfigError(
            f"{source.description} gives {len(head)} blocks of {block_size} tokens; --streaming holds out the "
            f"first {wanted} (data.validation_max_blocks) for validation and needs at least one more to train on: "
            "use more text, a smaller --block-size or a smaller validation_max_blocks."
        )
    return StreamHead(np.stack(head), after, itertools.chain([first], blocks), counters)


class StreamedBlocks:
    """The train blocks of a streamed run, read forward as the loop asks for them.

    ``take(first, count)`` returns train samples ``first … first+count-1``
    (sample ``n`` is train block ``n`` of the stream, epochs following one
    another); requests must move forward, as the loop's do. ``state(n)``
    advances to sample ``n`` and says where the stream stands, for the
    checkpoint; ``restore`` continues from such a state.
    """

    def __init__(
        self,
        source: TextSource,
        tokenizer: PreTrainedTokenizerBase,
        block_size: int,
        settings: DataSettings,
        head: StreamHead,
    ) -> None:
        self.source, self.tokenizer, self.block_size, self.settings = source, tokenizer, block_size, settings
        self.head = head
        self.counters = head.counters
        # The files' paths, sizes and modification times, saved with the position so that a resume refuses data
        # that changed under it (None for a source without such a fingerprint, such as the hub).
        self._files = token_cache.target_fingerprint(source)
        self.sample = 0
        self._position = head.train_start
        self._blocks = head.rest
        head.rest = None

    def _next(self) -> np.ndarray:
        if self._blocks is None:
            self._blocks = stream_blocks(
                self.source, self.tokenizer, self.block_size, self._position, self.settings.max_tokens, self.counters
            )
        found = next(self._blocks, None)
        if found is None:  # the pass is over: the next epoch starts again after the head
            start = self.head.train_start
            self._position = StreamPosition(
                self._position.epoch + 1, start.blocks, start.target, start.unit, start.offset
            )
            self._blocks = None
            return self._next()
        block, self._position = found
        self.sample += 1
        return block

    def skip_to(self, sample: int) -> None:
        if sample < self.sample:
            raise RuntimeError(f"the stream is at sample {self.sample} and cannot go back to {sample}")
        while self.sample < sample:
            self._next()

    def take(self, first: int, count: int) -> np.ndarray:
        self.skip_to(first)
        return np.stack([self._next() for _ in range(count)])

    def state(self, sample: int) -> dict[str, Any]:
        self.skip_to(sample)
        return {"kind": "stream", "sample": sample, **self._position.to_dict(), "files": self._files}

    def restore(self, saved: dict[str, Any] | None, sample: int) -> None:
        if saved is None or saved.get("kind") != "stream" or int(saved.get("sample", -1)) != sample:
            raise ConfigError(
                f"--resume: the checkpoint holds no stream position for sample {sample} (it was written by a run "
                "without --streaming, or by an older newcompute): resume it without --streaming, or start again."
            )
        files = saved.get("files")
        if files is not None and self._files is not None and json.loads(json.dumps(self._files)) != files:
            raise ConfigError(
                f"--resume: {self.source.description} changed since the checkpoint was written (a file's path, size "
                "or modification time differs), so its stream position no longer points at the same text. Restore "
                "the data as it was, or start a new run with --output-dir."
            )
        self.sample = sample
        self._position = StreamPosition.from_dict(saved)
        self._blocks = None
