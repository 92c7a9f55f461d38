"""Pre-tokenized data saved with HF datasets' ``save_to_disk``: a folder whose rows hold ``input_ids``.

Many pipelines tokenize once with ``datasets.map`` and keep the result with
``save_to_disk``; training on it should not decode and tokenize again. Such
a folder is recognised by the files ``save_to_disk`` writes
(``dataset_info.json`` and ``state.json``, or ``dataset_dict.json`` for
several splits, of which ``data.split`` is read) and loaded with
``datasets.load_from_disk``, which memory-maps its Arrow files: a dataset
larger than memory is read page by page. Each row's ``input_ids`` is one
document; rows are joined by the end-of-text token like text documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newcompute.datasource import DataSource
from newcompute.errors import ConfigError

if TYPE_CHECKING:
    from newcompute.config import DataSettings

IDS_COLUMN = "input_ids"
ROWS_AT_ONCE = 1024
"""Rows read from the Arrow files at a time: what a read costs in memory beyond the tokens kept."""
INSTALL = "pip install 'newcompute[data]' (or pip install datasets)"


def is_saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds what ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` writes."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()
    )


def _load(folder: Path, settings: DataSettings) -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"data.dataset: {folder} is a dataset saved with datasets' save_to_disk, which needs the 'datasets' "
            f"package: {INSTALL}."
        ) from None
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(
            f"data.dataset: {folder} looks like a save_to_disk dataset but cannot be loaded ({type(exc).__name__}: "
            f"{exc}). Save it again with Dataset.save_to_disk."
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if settings.split not in loaded:
            raise ConfigError(
                f"data.split: {folder} has no split '{settings.split}'; its splits are: {', '.join(loaded)}. "
                "Pass --split NAME."
            )
        loaded = loaded[settings.split]
    return loaded


def _read(target: str, settings: DataSettings) -> Iterator[Any]:
    folder = Path(target)
    dataset = _load(folder, settings)
    if IDS_COLUMN not in dataset.column_names:
        raise ConfigError(
            f"data.dataset: {folder} has no '{IDS_COLUMN}' column (its columns: {', '.join(dataset.column_names)}). "
            f"A save_to_disk dataset is read as pre-tokenized data: tokenize it with the model's tokenizer into "
            f"'{IDS_COLUMN}' (datasets.map), or export its text to .jsonl/.parquet and pass that."
        )
    ids = dataset.select_columns([IDS_COLUMN]).with_format("numpy")
    for start in range(0, len(ids), ROWS_AT_ONCE):
        yield from ids[start : start + ROWS_AT_ONCE][IDS_COLUMN]


def _describe(target: str, settings: DataSettings) -> str:
    return f"pre-tokenized save_to_disk dataset {target} ({IDS_COLUMN}, memory-mapped)"


DISK_DATASET_SOURCE = DataSource(
    "hf-disk",
    f"a folder written by datasets' save_to_disk, rows of token ids in '{IDS_COLUMN}' (needs 'datasets')",
    _read,
    folders=is_saved_dataset,
    describe=_describe,
)
