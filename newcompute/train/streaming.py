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
emitted, the file and the text chunk the next block starts in, how many of
that chunk's tokens were already used, and where the chunk starts) is
saved in every checkpoint. A resumed run skips the files before it
unread and reopens that file at the chunk: a text file at the chunk's
byte, JSON lines at the line of the chunk's row, a streamed hub dataset
with its ``state_dict()`` from before the chunk's row; any other source
(Parquet, token files, a plugin's) is read again up to the chunk without
being tokenized. It tokenizes from there and continues with exactly the
blocks it would have seen.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.train import token_cache
from newcompute.train.packing import batched, tokenize_batch
from newcompute.train.sources import TextSource
from newcompute.train.stream_targets import Chunk, Mark, target_chunks, target_count


@dataclass(frozen=True)
class StreamPosition:
    """Where the stream stands: what the next block is made of, in one epoch's pass over the source.

    ``target`` is the file (or other target) of the source the next block
    starts in, ``unit`` counts that target's chunks of text (or of token
    ids) wholly used before it, ``offset`` the tokens of chunk ``unit``
    already used, ``blocks`` the blocks emitted in this epoch, validation
    head included. ``byte``, ``state`` and ``state_unit`` say where chunk
    ``unit`` starts, for a target that can be reopened there
    (:class:`newcompute.train.stream_targets.Mark`); a position without
    them (or from an older newcompute) resumes by reading the target from
    its start and passing over the chunks before ``unit``.
    """

    epoch: int = 0
    blocks: int = 0
    target: int = 0
    unit: int = 0
    offset: int = 0
    byte: int | None = None
    state: dict[str, Any] | None = None
    state_unit: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> StreamPosition:
        counts = {key: int(saved[key]) for key in ("epoch", "blocks", "target", "unit", "offset")}
        byte, state = saved.get("byte"), saved.get("state")
        return cls(
            **counts,
            byte=None if byte is None else int(byte),
            state=None if state is None else dict(state),
            state_unit=int(saved.get("state_unit", 0)),
        )

    @classmethod
    def at(cls, epoch: int, blocks: int, target: int, mark: Mark, offset: int) -> StreamPosition:
        """The position ``offset`` tokens into the chunk of ``target`` that ``mark`` points at."""
        return cls(epoch, blocks, target, mark.unit, offset, mark.byte, mark.state, mark.state_unit)

    @property
    def mark(self) -> Mark:
        return Mark(self.unit, self.byte, self.state, self.state_unit)


@dataclass
class StreamCounters:
    """What a stream has done so far: tokens it tokenized (or read as ids) and chunks it read again on a resume
    only to pass over them."""

    tokens: int = 0
    skipped_units: int = 0


def _chunks(source: TextSource, start: StreamPosition, counters: StreamCounters) -> Iterator[tuple[int, Chunk]]:
    """Every chunk from the position's on, target by target, with the target it is in."""
    for target in range(start.target, target_count(source)):
        first = start.mark if target == start.target else Mark()
        for chunk in target_chunks(source, target, first):
            if chunk.mark.unit < first.unit:
                counters.skipped_units += 1
            else:
                yield target, chunk


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
    pending: deque[list[Any]] = deque()  # [(target, mark), its tokens, how many of them are used]
    held, blocks, skip = 0, start.blocks, start.offset
    for batch in batched(_chunks(source, start, counters), lambda tagged: tagged[1].unit.text):
        units = [chunk.unit for _, chunk in batch]
        for (target, chunk), ids in zip(batch, tokenize_batch(units, tokenizer, where)):
            tokens = np.concatenate([ids, eos]) if chunk.unit.last else ids
            counters.tokens += tokens.size
            pending.append([(target, chunk.mark), tokens, skip])
            held += tokens.size - skip
            skip = 0
            while held >= block_size:
                if limit is not None and (blocks + 1) * block_size > limit:
                    return
                block = _take(pending, block_size)
                held -= block_size
                blocks += 1
                (at, mark), used = (pending[0][0], pending[0][2]) if pending else ((target, chunk.following), 0)
                yield block, StreamPosition.at(start.epoch, blocks, at, mark, used)


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
            self._position = replace(self.head.train_start, epoch=self._position.epoch + 1)
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
