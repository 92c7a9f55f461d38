"""Tokenizing a whole local corpus with ``datasets.map(batched=True, num_proc=N)``, when datasets is installed.

A first run on a large local corpus spends its start-up tokenizing, and the
result goes to the token cache (:mod:`newcompute.train.token_cache`), so it
is paid once. This spreads that work over the cores the run may use: the
documents are cut into the same chunks the sequential path tokenizes
(``newcompute.train.packing.document_units``), written to an Arrow file
in a scratch folder inside the cache, tokenized in ``N`` processes, and
joined in their order with the end-of-text token after each document. Each
chunk is tokenized on its own either way, so the tokens are the same, token
for token, as the sequential path's; the scratch folder is removed after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from transformers import PreTrainedTokenizerBase

from newcompute.train.sources import TextSource

TEXT_SOURCES = frozenset({"builtin", "text", "jsonl", "parquet"})
"""The core's sources whose documents are text only: the ones this path reads (token ids need no tokenizing)."""
MIN_BYTES = 8 << 20
"""Below this much text, starting the processes costs more than they save (about 0.7 s on a 2-core machine,
where 0.5 MB tokenizes in 0.2 s here), so a smaller corpus is tokenized in this process."""
_PARALLELISM = "TOKENIZERS_PARALLELISM"
ROWS_PER_BATCH = 64
"""Chunks (of up to 64k characters each) per call of the tokenizing function."""


def available() -> bool:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def applies(source: TextSource, limit: int | None, processes: int) -> bool:
    """Whether to tokenize ``source`` this way: all of a large local text source read, cores to spread it on,
    datasets installed."""
    targets = getattr(source, "targets", None)
    if limit is not None or processes < 2 or not targets:
        return False
    if not all(item.source.name in TEXT_SOURCES for item in targets):
        return False
    files = [Path(item.target) for item in targets if item.source.suffixes]
    return sum(file.stat().st_size for file in files if file.is_file()) >= MIN_BYTES and available()


@dataclass(frozen=True)
class ParallelTokens:
    tokens: np.ndarray
    documents: int


class TextUnit(Protocol):
    text: str | None
    last: bool


def _write_chunks(units: Iterable[TextUnit], file: Path) -> None:
    """The chunks as an Arrow stream file (what datasets memory-maps), written a batch at a time."""
    import pyarrow as pa

    schema = pa.schema([("text", pa.large_string()), ("last", pa.bool_())])
    texts: list[str] = []
    lasts: list[bool] = []
    with pa.OSFile(str(file), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for unit in units:
            texts.append(unit.text or "")
            lasts.append(unit.last)
            if len(texts) == ROWS_PER_BATCH:
                writer.write_batch(pa.record_batch([texts, lasts], schema=schema))
                texts, lasts = [], []
        if texts:
            writer.write_batch(pa.record_batch([texts, lasts], schema=schema))


class _Tokenize:
    """The function ``map`` calls on a batch of chunks: their tokens, with end-of-text after a document's last."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        encoded = self.tokenizer(
            batch["text"], add_special_tokens=False, return_attention_mask=False, verbose=False
        )["input_ids"]
        return {"input_ids": [ids + self.eos if last else ids for ids, last in zip(encoded, batch["last"])]}


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """``os.environ`` as it was: ``map(num_proc=…)`` sets TOKENIZERS_PARALLELISM=false for its workers and leaves
    a copy of the environment in ``os.environ`` (datasets 5.2), which code holding the original (rich's consoles)
    no longer sees, and which would keep this process's own tokenizer on one thread."""
    environ = os.environ
    parallelism = environ.get(_PARALLELISM)
    try:
        yield
    finally:
        os.environ = environ
        if parallelism is None:
            environ.pop(_PARALLELISM, None)
        else:
            environ[_PARALLELISM] = parallelism


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here rather than ending the process at once (the command line's
    handler), so that datasets shuts its pool and manager processes down and the scratch folder is removed.

    The worker processes datasets forks inherit the handler and go on until their pool is terminated. While
    it shuts down, datasets may raise an error of its own (waiting for results the workers never sent); after
    a Ctrl-C the run reports the interrupt, not that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    parent = os.getpid()
    requested: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        if os.getpid() == parent:
            requested.append(signum)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    except BaseException:
        if requested:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars of datasets' own in the middle of the run's output."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def tokenize(
    units: Iterable[TextUnit], tokenizer: PreTrainedTokenizerBase, processes: int, scratch: Path
) -> ParallelTokens:
    """The tokens of all of a source's chunks of text (:func:`newcompute.train.packing.document_units`),
    tokenized by ``datasets.map`` in ``processes`` processes."""
    import datasets

    scratch.mkdir(parents=True, exist_ok=True)
    with _interruptible():
        work = Path(tempfile.mkdtemp(prefix="tokenize-", dir=scratch))
        try:
            _write_chunks(units, work / "chunks.arrow")
            with _quiet_datasets(), _environment_kept():
                chunks = datasets.Dataset.from_file(str(work / "chunks.arrow"))
                tokens, documents = _mapped(chunks, tokenizer, processes, work / "tokens.arrow")
            return ParallelTokens(tokens, documents)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _mapped(chunks: Any, tokenizer: PreTrainedTokenizerBase, processes: int, file: Path) -> tuple[np.ndarray, int]:
    """The chunks' tokens joined in order, and the number of documents they end."""
    import datasets

    processes = max(1, min(processes, len(chunks)))
    features = datasets.Features(
        {"input_ids": datasets.Sequence(datasets.Value("int32")), "last": datasets.Value("bool")}
    )
    tokenized = chunks.map(
        _Tokenize(tokenizer),
        features=features,
        batched=True,
        batch_size=ROWS_PER_BATCH,
        num_proc=processes if processes > 1 else None,
        remove_columns=["text"],
        load_from_cache_file=False,
        new_fingerprint="newcompute-tokenize",
        cache_file_name=str(file),
    )
    documents = int(sum(tokenized.data.column("last").to_numpy(zero_copy_only=False)))
    column = tokenized.data.column("input_ids").combine_chunks()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.int32), documents
