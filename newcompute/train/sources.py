"""Where training text comes from: the embedded corpus, local files, or the hub.

Every source yields documents (strings) in a fixed order, so the same
settings always give the same token stream. The default needs no network:
the text of ``pydoc_data.topics``, the help topics every CPython ships
(about 0.47 MB of English prose and code), which is enough for a tiny model
to show a falling loss in a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from newcompute.config import DataSettings
from newcompute.errors import ConfigError

BUILTIN_PYDOC = "builtin:pydoc"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


class TextSource(Protocol):
    """A way to read documents, and a sentence that says what it is."""

    description: str
    bounded: bool

    def documents(self) -> Iterator[str]: ...


@dataclass(frozen=True)
class PydocTopics:
    description: str = "the built-in corpus: Python's pydoc_data.topics help text (offline)"
    bounded: bool = True

    def documents(self) -> Iterator[str]:
        from pydoc_data.topics import topics

        for name in sorted(topics):
            yield topics[name]


@dataclass(frozen=True)
class LocalFiles:
    """``.txt`` files are one document each; ``.jsonl`` and ``.parquet`` hold one per row."""

    files: tuple[Path, ...]
    text_column: str
    description: str
    bounded: bool = True

    def documents(self) -> Iterator[str]:
        for file in self.files:
            if file.suffix == ".txt":
                yield file.read_text(encoding="utf-8", errors="replace")
            elif file.suffix == ".jsonl":
                yield from _jsonl_texts(file, self.text_column)
            else:
                yield from _parquet_texts(file, self.text_column)


@dataclass(frozen=True)
class HubDataset:
    settings: DataSettings
    description: str
    bounded: bool = False

    def documents(self) -> Iterator[str]:
        dataset = _load_hub_dataset(self.settings)
        column, where = self.settings.text_column, self.settings.dataset
        columns = list(getattr(dataset, "column_names", None) or [])
        if columns and column not in columns:
            raise ConfigError(_unknown_column(column, columns, where))
        for row in dataset:
            if column not in row:
                raise ConfigError(_unknown_column(column, list(row), where))
            yield _as_text(row[column], column, where)


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


def _jsonl_texts(file: Path, column: str) -> Iterator[str]:
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file}, line {number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict) or column not in row:
                keys = ", ".join(row) if isinstance(row, dict) else f"a {type(row).__name__}"
                raise ConfigError(
                    f"data.text_column: {file}, line {number} has no key '{column}' (it has: {keys}). "
                    "Pass --text-column NAME."
                )
            yield _as_text(row[column], column, f"{file}, line {number}")


def _parquet_texts(file: Path, column: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{file} is a Parquet file, which needs pyarrow: pip install pyarrow "
            "(or convert it to .jsonl, which needs nothing)."
        ) from None
    table = pq.ParquetFile(file)
    names = table.schema_arrow.names
    if column not in names:
        raise ConfigError(_unknown_column(column, names, str(file)))
    for batch in table.iter_batches(columns=[column]):
        for value in batch.column(0).to_pylist():
            yield _as_text(value, column, str(file))


def _load_hub_dataset(settings: DataSettings) -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"Dataset '{settings.dataset}' is not a local file or folder, so it would come from the hub, "
            "which needs the 'datasets' package: pip install datasets. "
            f"Offline, use the built-in corpus ('{BUILTIN_PYDOC}') or local .txt/.jsonl/.parquet files."
        ) from None
    try:
        return datasets.load_dataset(
            settings.dataset, settings.config_name, split=settings.split, streaming=settings.streaming
        )
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise ConfigError(
            f"Could not load dataset '{settings.dataset}' (config {settings.config_name!r}, split "
            f"'{settings.split}') from the hub: {exc}"
        ) from None


def _local_files(path: Path) -> tuple[Path, ...]:
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise ConfigError(
                f"data.dataset: {path} is a '{path.suffix}' file; supported: {', '.join(LOCAL_SUFFIXES)}."
            )
        return (path,)
    files = tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES))
    if not files:
        raise ConfigError(f"data.dataset: folder {path} holds no {', '.join(LOCAL_SUFFIXES)} files.")
    return files


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix in LOCAL_SUFFIXES or name.count("/") > 1


def open_source(settings: DataSettings) -> TextSource:
    """The source ``settings.dataset`` names, or a ConfigError that says what would be valid."""
    name = settings.dataset
    if name == BUILTIN_PYDOC:
        return PydocTopics()
    if name.startswith("builtin:"):
        raise ConfigError(f"data.dataset: unknown built-in corpus '{name}'; the built-in corpus is '{BUILTIN_PYDOC}'.")
    path = Path(name).expanduser()
    if path.exists():
        files = _local_files(path)
        what = f"{len(files)} files under {path}" if path.is_dir() else str(path)
        return LocalFiles(files, settings.text_column, f"local {what}")
    if _looks_like_path(name):
        raise ConfigError(
            f"data.dataset: {name} does not exist. Pass an existing .txt/.jsonl/.parquet file or folder, "
            f"a hub dataset id such as HuggingFaceFW/fineweb-edu, or '{BUILTIN_PYDOC}'."
        )
    config = f", config {settings.config_name}" if settings.config_name else ""
    mode = "streamed" if settings.streaming else "downloaded"
    return HubDataset(settings, f"hub dataset {name}{config}, split {settings.split} ({mode})")
