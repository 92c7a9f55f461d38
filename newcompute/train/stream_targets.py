"""Reading one target of a streamed source from a chunk within it, so that a resume need not read what precedes it.

Every target is read as packing reads it, chunk by chunk (the units of
:func:`newcompute.train.packing.document_units`), and each chunk comes with
a :class:`Mark`, what a resume needs to reopen the target there:

- a local ``.txt`` file is one document, and where its chunks are cut
  depends only on the text from where a chunk starts, so a stream reopened
  at the byte a chunk starts at reads exactly the chunks the uninterrupted
  stream read from there;
- a JSON-lines file is reopened at the byte its row's line starts at, and
  a hub dataset that datasets streams with the ``state_dict()`` it had
  after the row before, so either passes over only that row's chunks
  before the position;
- any other target is read from its start again, the chunks before the
  position passed over untokenized.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newcompute.core_sources import HUB_SOURCE, JSONL_SOURCE, TEXT_SOURCE, hub_rows, jsonl_rows, text_pieces
from newcompute.train.packing import Unit, document_units, text_chunks, with_last
from newcompute.train.sources import ResolvedSource, TextSource


@dataclass(frozen=True)
class Mark:
    """Where chunk ``unit`` of a target starts: the byte in its file (a text file), or where the rows before
    the chunk's row end (``state``: a JSON-lines file's byte and line, a streamed dataset's ``state_dict()``)
    and how many chunks those rows gave (``state_unit``)."""

    unit: int = 0
    byte: int | None = None
    state: dict[str, Any] | None = None
    state_unit: int = 0


@dataclass
class Chunk:
    """A unit, where it starts and where the unit after it starts (the position when a block ends with it)."""

    unit: Unit
    mark: Mark
    following: Mark


def target_count(source: TextSource) -> int:
    """How many targets the source reads: a resolved source's files one by one, any other source as one."""
    return len(source.targets) if isinstance(source, ResolvedSource) else 1


def target_chunks(source: TextSource, target: int, start: Mark) -> Iterator[Chunk]:
    """The chunks of ``target`` from as near chunk ``start.unit`` as its kind can reopen: the caller passes
    over those before it (read, not tokenized)."""
    item = source.targets[target] if isinstance(source, ResolvedSource) else None
    if item is not None and item.source is TEXT_SOURCE:
        chunks = _text_chunks(Path(item.target), start)
    elif item is not None and item.source is JSONL_SOURCE:
        reopen = start.state or {}
        chunks = _row_chunks(jsonl_rows(Path(item.target), source.settings.text_column, **reopen), start)
    elif item is not None and item.source is HUB_SOURCE:
        chunks = _row_chunks(hub_rows(item.target, source.settings, start.state), start)
    else:
        documents = source.target_documents(target) if isinstance(source, ResolvedSource) else source.documents()
        units = document_units(documents, source.description)
        chunks = (Chunk(unit, Mark(index), Mark(index + 1)) for index, unit in enumerate(units))
    yield from chunks


def _text_chunks(file: Path, start: Mark) -> Iterator[Chunk]:
    """A text file's chunks from ``start.byte`` (from the file's start without one), each with its byte."""
    index, byte = (start.unit, start.byte) if start.byte is not None else (0, 0)
    texts = text_chunks(text_pieces(file, start=byte))
    if index > 0:  # reopened after its first chunk: no text left means the document is over, not an empty one
        first = next(texts, None)
        if first is None:
            return
        texts = itertools.chain([first], texts)
    for text, last in with_last(texts, ""):
        end = byte + len(text.encode("utf-8"))
        yield Chunk(Unit(text, None, last), Mark(index, byte), Mark(index + 1, end))
        index, byte = index + 1, end


def _row_chunks(rows: Iterator[tuple[str, dict[str, Any] | None]], start: Mark) -> Iterator[Chunk]:
    """The chunks of rows, each row's text with the state after it, reopened at ``start.state``."""
    index, before = (start.state_unit, start.state) if start.state is not None else (0, None)
    for text, after in rows:
        row = index
        for chunk, last in with_last(text_chunks([text]), ""):
            following = Mark(index + 1, None, after, index + 1) if last else Mark(index + 1, None, before, row)
            yield Chunk(Unit(chunk, None, last), Mark(index, None, before, row), following)
            index += 1
        before = after
