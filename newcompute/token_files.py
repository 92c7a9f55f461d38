"""Pre-tokenized data: flat token files, as nanoGPT's ``prepare.py`` and many pipelines write them.

A corpus tokenized once (possibly by another tool) should not be decoded
and tokenized again for every run. ``.npy`` files carry their dtype and
shape; ``.bin`` files are raw little-endian integers with no header, so
their width comes from ``data.token_dtype`` (nanoGPT writes ``uint16``).
Both are memory-mapped: a file larger than memory is read page by page.
The ids must come from the model's own tokenizer; the packer checks they
are in its range. A file is one document: the end-of-text separators the
writer put in it are kept as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from newcompute.datasource import DataSource
from newcompute.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from newcompute.config import DataSettings


def _flat(ids: np.ndarray, file: Path) -> np.ndarray:
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ConfigError(
            f"data.dataset: {file} holds an array of shape {ids.shape} and dtype {ids.dtype}; a token file must "
            "be one flat array of integer token ids (e.g. np.array(ids, dtype=np.uint16))."
        )
    return ids


def _bin(target: str, settings: DataSettings) -> Iterator[np.ndarray]:
    import numpy as np  # not at import: the core's plugin registers these sources when the CLI starts

    file, dtype = Path(target), np.dtype(settings.token_dtype).newbyteorder("<")
    size = file.stat().st_size
    if size % dtype.itemsize:
        raise ConfigError(
            f"data.dataset: {file} has {size} bytes, not a whole number of {settings.token_dtype} tokens "
            f"({dtype.itemsize} bytes each): it is truncated or was written with another width "
            "(set --token-dtype uint16 or uint32)."
        )
    yield np.memmap(file, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)


def _npy(target: str, settings: DataSettings) -> Iterator[np.ndarray]:
    import numpy as np

    file = Path(target)
    try:
        ids = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"data.dataset: {file} is not a readable .npy array ({exc}). Write it with numpy.save."
        ) from None
    yield _flat(ids, file)


TOKEN_FILE_SOURCES = [
    DataSource(
        "tokens-bin",
        "raw token ids, nanoGPT-style (--token-dtype uint16|uint32), memory-mapped",
        _bin,
        suffixes=(".bin",),
    ),
    DataSource("tokens-npy", "a flat NumPy array of token ids (.npy), memory-mapped", _npy, suffixes=(".npy",)),
]
