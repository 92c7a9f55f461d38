"""The core's data sources: the built-in corpus, local text, JSON-lines and Parquet files, and hub datasets.

They reach the trainer only through the data-sources hook (the core's own
plugin registers :data:`CORE_SOURCES`), as a plugin's would. The default
needs no network: the text of ``pydoc_data.topics``, the help topics every
CPython ships (about 0.47 MB of English prose and code), which is enough
for a tiny model to show a falling loss in a minute.

Local files are read strictly as UTF-8, in chunks: a file that is not text
is refused naming the file and the byte where it stops being text, rather
than trained on as replacement characters, and a large file never has to
fit in memory as one string.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newcompute.datasource import DataSource
from newcompute.errors import ConfigError

if TYPE_CHECKING:
    from newcompute.config import DataSettings

BUILTIN_SCHEME = "builtin:"
BUILTIN_PYDOC = "builtin:pydoc"
HUB_SCHEME = "hf:"
READ_CHUNK_BYTES = 1 << 20
"""Bytes of a text file decoded at a time: what a file costs in memory while it is read, whatever its size."""


def _builtin(target: str, settings: DataSettings) -> Iterator[str]:
    if target != BUILTIN_PYDOC.removeprefix(BUILTIN_SCHEME):
        raise ConfigError(
            f"data.dataset: unknown built-in corpus '{BUILTIN_SCHEME}{target}'; the built-in corpus is "
            f"'{BUILTIN_PYDOC}'."
        )
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 sequence that the next chunk completes."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte or ASCII: the sequence it starts needs this many bytes
            needed = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return back if needed > back else 0
    return 0


def _decoded(data: bytes, file: Path, offset: int) -> str:
    """``data`` (read from ``file`` at byte ``offset``) as text, or a ConfigError saying where it is not text."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(
            f"data.dataset: {file} holds a NUL byte at byte offset {offset + nul}: it looks like a binary file, "
            "not text. Pass UTF-8 text files (.txt), or .jsonl/.parquet for structured data."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"data.dataset: {file} is not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset "
            f"{offset + exc.start} cannot be decoded ({exc.reason}). Convert the file to UTF-8 "
            "(e.g. iconv -t utf-8) or leave it out of the dataset."
        ) from None


def text_pieces(file: Path, chunk_bytes: int = READ_CHUNK_BYTES, start: int = 0) -> Iterator[str]:
    """The text of ``file`` from byte ``start`` (where a character begins) in pieces of about ``chunk_bytes``
    bytes, split between characters: a resumed stream reads a large file from where it stopped."""
    offset, carry = start, b""
    with file.open("rb") as stream:
        stream.seek(start)
        while block := stream.read(chunk_bytes):
            data = carry + block
            keep = _incomplete_tail(data)
            whole = data[: len(data) - keep]
            carry = data[len(data) - keep :]
            if whole:
                yield _decoded(whole, file, offset)
            offset += len(whole)
    if carry:
        yield _decoded(carry, file, offset)


def _text_file(target: str, settings: DataSettings) -> Iterator[Iterator[str]]:
    """A ``.txt`` file is one document, handed on in pieces so that its size does not matter."""
    yield text_pieces(Path(target))


def _unknown_column(column: str, columns: list[str], where: str) -> str:
    return (
        f"data.text_column: {where} has no column '{column}'. Its columns are: {', '.join(map(str, columns))}. "
        "Pass --text-column NAME."
    )


def _as_text(value: Any, column: str, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"data.text_column: column '{column}' of {where} holds {type(value).__name__}, not text. "
            "Pass --text-column with a column of strings."
        )
    return value


def jsonl_rows(file: Path, column: str, byte: int = 0, line: int = 1) -> Iterator[tuple[str, dict[str, int]]]:
    """Each document of a JSON-lines file from ``byte``, where line ``line`` starts, with where the next line
    starts (``{"byte": …, "line": …}``): a resumed stream reopens the file there."""
    with file.open("rb") as lines:
        lines.seek(byte)
        for number, raw in enumerate(lines, start=line):
            text = _decoded(raw, file, byte)
            byte += len(raw)
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file}, line {number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict) or column not in row:
                keys = ", ".join(row) if isinstance(row, dict) else f"a {type(row).__name__}"
                raise ConfigError(
                    f"data.text_column: {file}, line {number} has no key '{column}' (it has: {keys}). "
                    "Pass --text-column NAME."
                )
            yield _as_text(row[column], column, f"{file}, line {number}"), {"byte": byte, "line": number + 1}


def _jsonl(target: str, settings: DataSettings) -> Iterator[str]:
    """One document per line: the ``text_column`` key of each JSON object (blank lines are skipped)."""
    for text, _ in jsonl_rows(Path(target), settings.text_column):
        yield text


def _parquet(target: str, settings: DataSettings) -> Iterator[str]:
    """One document per row: the ``text_column`` column, read a record batch at a time."""
    file, column = Path(target), settings.text_column
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{file} is a Parquet file, which needs pyarrow: pip install pyarrow "
            "(or convert it to .jsonl, which needs nothing)."
        ) from None
    try:
        table = pq.ParquetFile(file)
        names = table.schema_arrow.names
        if column not in names:
            raise ConfigError(_unknown_column(column, names, str(file)))
        for batch in table.iter_batches(columns=[column]):
            for value in batch.column(0).to_pylist():
                yield _as_text(value, column, str(file))
    except (pyarrow.ArrowException, OSError) as exc:
        raise ConfigError(
            f"data.dataset: {file} is not a readable Parquet file ({type(exc).__name__}: {exc}). "
            "Pass a file written by a Parquet writer (pyarrow, pandas, datasets), or a .txt/.jsonl file."
        ) from None


def _load_hub_dataset(target: str, settings: DataSettings) -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"Dataset '{target}' is not a local file or folder, so it would come from the hub, "
            "which needs the 'datasets' package: pip install 'newcompute[data]' (or pip install datasets). "
            f"Offline, use the built-in corpus ('{BUILTIN_PYDOC}') or local .txt/.jsonl/.parquet files."
        ) from None
    try:
        return datasets.load_dataset(target, settings.config_name, split=settings.split, streaming=settings.streaming)
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise ConfigError(
            f"Could not load dataset '{target}' (config {settings.config_name!r}, split "
            f"'{settings.split}') from the hub: {exc}"
        ) from None


def hub_rows(
    target: str, settings: DataSettings, state: dict[str, Any] | None = None
) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Each row's text with the dataset's ``state_dict()`` after it, from ``state`` (a state so taken) on.

    A streamed dataset (datasets' IterableDataset) keeps such a state, so a
    resumed stream loads the state after the last row it had read and
    continues from the next row without reading those before; a dataset
    without one (a downloaded split) gives None.
    """
    dataset = _load_hub_dataset(target, settings)
    column = settings.text_column
    columns = list(getattr(dataset, "column_names", None) or [])
    if columns and column not in columns:
        raise ConfigError(_unknown_column(column, columns, target))
    stateful = callable(getattr(dataset, "state_dict", None)) and callable(getattr(dataset, "load_state_dict", None))
    if state is not None:
        if not stateful:
            raise ConfigError(
                f"--resume: the checkpoint holds where the stream of hub dataset {target} stood (its "
                "state_dict()), but the dataset now loads as one that keeps no such state (datasets older than "
                "2.18 keeps none): install datasets>=2.18, or start a new run with --output-dir."
            )
        dataset.load_state_dict(state)
    for row in dataset:
        if column not in row:
            raise ConfigError(_unknown_column(column, list(row), target))
        yield _as_text(row[column], column, target), dataset.state_dict() if stateful else None


def _hub(target: str, settings: DataSettings) -> Iterator[str]:
    for text, _ in hub_rows(target, settings):
        yield text


def _describe_builtin(target: str, settings: DataSettings) -> str:
    return "the built-in corpus: Python's pydoc_data.topics help text (offline)"


def _describe_hub(target: str, settings: DataSettings) -> str:
    config = f", config {settings.config_name}" if settings.config_name else ""
    mode = "streamed" if settings.streaming else "downloaded"
    return f"hub dataset {target}{config}, split {settings.split} ({mode})"


TEXT_SOURCE = DataSource("text", "a UTF-8 text file, one document", _text_file, suffixes=(".txt",))
JSONL_SOURCE = DataSource("jsonl", "JSON lines, one document per line (--text-column)", _jsonl, suffixes=(".jsonl",))
HUB_SOURCE = DataSource(
    "hub",
    "a dataset on the Hugging Face hub (needs 'datasets'); a bare id such as org/name means hf:org/name",
    _hub,
    schemes=(HUB_SCHEME,),
    bounded=False,
    describe=_describe_hub,
)
"""The sources a stream can reopen in the middle (a text file at a byte, JSON lines at a line, a streamed
dataset at a row)."""

CORE_SOURCES: list[DataSource] = [
    DataSource(
        "builtin",
        "the built-in corpus: Python's pydoc_data.topics help text (offline)",
        _builtin,
        schemes=(BUILTIN_SCHEME,),
        describe=_describe_builtin,
    ),
    TEXT_SOURCE,
    JSONL_SOURCE,
    DataSource(
        "parquet", "Parquet, one document per row (--text-column; needs pyarrow)", _parquet, suffixes=(".parquet",)
    ),
    HUB_SOURCE,
]
