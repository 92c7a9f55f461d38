"""Turning documents into fixed-length training blocks, a held-out split and a seeded order.

Documents are tokenized with the model's tokenizer, joined with its
end-of-text token and cut into ``block_size`` blocks (the tail that does not
fill a block is dropped), as HF's ``run_clm`` and NewComputeBench do. The
validation blocks are every ``period``-th block from an offset chosen by the
seed, capped at ``validation_max_blocks``. Because the rule looks at block
positions only, the held-out set does not depend on how much of a source a
run reads beyond them, so runs of different lengths are compared on the
same text and ``newcompute eval`` rebuilds exactly the set a run used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from newcompute.config import DataSettings
from newcompute.errors import ConfigError
from newcompute.train.sources import TextSource

_DOCS_PER_BATCH = 512


@dataclass(frozen=True)
class PackedCorpus:
    """Token blocks of one source: ``train`` and ``validation`` are ``(blocks, block_size)`` int32 arrays."""

    train: np.ndarray
    validation: np.ndarray
    block_size: int
    tokens_read: int
    documents: int
    exhausted: bool
    separator: str

    @property
    def train_tokens(self) -> int:
        return int(self.train.size)


def validation_period(fraction: float) -> int:
    return max(2, round(1.0 / fraction))


def _token_stream(
    source: TextSource, tokenizer: PreTrainedTokenizerBase, limit: int | None
) -> tuple[np.ndarray, int, bool]:
    """The source's tokens (at most ``limit``), how many documents were read, and whether it ran out."""
    eos = tokenizer.eos_token_id
    pieces: list[np.ndarray] = []
    total = documents = 0
    texts = source.documents()
    while limit is None or total < limit:
        batch = list(islice(texts, _DOCS_PER_BATCH))
        if not batch:
            return _joined(pieces, limit), documents, True
        encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for ids in encoded["input_ids"]:
            documents += 1
            piece = np.asarray(ids + [eos] if eos is not None else ids, dtype=np.int64)
            pieces.append(piece)
            total += piece.size
            if limit is not None and total >= limit:
                break
    return _joined(pieces, limit), documents, False


def _joined(pieces: list[np.ndarray], limit: int | None) -> np.ndarray:
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return stream[:limit] if limit is not None else stream


def split_blocks(blocks: np.ndarray, settings: DataSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)``: validation takes every period-th block from a seeded offset, up to the cap."""
    count = blocks.shape[0]
    period = validation_period(settings.validation_fraction)
    offset = seed % min(period, count)
    held = np.arange(offset, count, period)[: settings.validation_max_blocks]
    keep = np.ones(count, dtype=bool)
    keep[held] = False
    return blocks[keep], blocks[held]


def pack(
    source: TextSource,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    settings: DataSettings,
    seed: int,
    limit: int | None = None,
) -> PackedCorpus:
    """Read, tokenize and pack ``source``; ``limit`` caps the tokens read (None reads it all)."""
    stream, documents, exhausted = _token_stream(source, tokenizer, limit)
    count = stream.size // block_size
    if count < 2:
        raise ConfigError(
            f"{source.description} gives {stream.size:,} tokens, fewer than two blocks of {block_size} "
            "(one to train on, one to validate): use more text or a smaller --block-size."
        )
    blocks = stream[: count * block_size].reshape(count, block_size).astype(np.int32)
    train, validation = split_blocks(blocks, settings, seed)
    separator = "end-of-text token" if tokenizer.eos_token_id is not None else "nothing (no end-of-text token)"
    return PackedCorpus(train, validation, block_size, int(stream.size), documents, exhausted, separator)


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


def as_batch(blocks: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(blocks.astype(np.int64)).to(device, non_blocking=True)
