"""Tokenize a corpus once: the token stream of local files and the built-in corpus, kept on disk.

Tokenizing is the slow part of starting a run on a large local corpus, and
it gives the same tokens every time the files, the tokenizer and the
reading settings are the same. So the stream is saved, under a key made of
exactly those: each file's resolved path, size and modification time, the
tokenizer's full serialisation, the end-of-text id, the settings that
change what is read (column, split, config, token width) and the read
limit. Any change gives another key, never stale tokens. A hub dataset or
a plugin's scheme has no such fingerprint here, so it is tokenized every
time, and the run says which of the two happened.

The cache lives in ``$NEWCOMPUTE_CACHE/tokens`` (default
``~/.cache/newcompute/tokens``); ``--no-cache`` leaves it alone. Entries are
written to a temporary name and renamed, so a killed run never leaves a
torn entry, and read memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from newcompute.core_sources import BUILTIN_SCHEME

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from newcompute.config import DataSettings
    from newcompute.train.sources import TextSource

CACHE_ENV = "NEWCOMPUTE_CACHE"
FORMAT = 1
"""Bumped whenever what a cached stream holds changes, so older entries are never read as newer ones."""


def cache_folder() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "newcompute"
    return Path(root).expanduser() / "tokens"


@dataclass(frozen=True)
class CachedStream:
    tokens: np.ndarray
    documents: int
    exhausted: bool


def target_fingerprint(source: TextSource) -> list[Any] | None:
    """What identifies the text of every target, or None when some target's text cannot be identified."""
    targets = getattr(source, "targets", None)
    registry = getattr(source, "registry", None)
    if targets is None or registry is None:
        return None
    found: list[Any] = []
    for item in targets:
        if registry.data_source_plugin(item.source.name) is not registry.core:
            return None
        if BUILTIN_SCHEME in item.source.schemes:
            found.append([item.source.name, item.target, sys.version])
        elif item.source.suffixes and Path(item.target).is_file():
            path = Path(item.target).resolve()
            status = path.stat()
            found.append([item.source.name, str(path), status.st_size, status.st_mtime_ns])
        else:
            return None
    return found


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()


def cache_key(
    source: TextSource, tokenizer: PreTrainedTokenizerBase, settings: DataSettings, limit: int | None
) -> str | None:
    """The entry's name for this read, or None when it cannot be cached safely."""
    targets = target_fingerprint(source)
    tokenizer_hash = _tokenizer_fingerprint(tokenizer)
    if targets is None or tokenizer_hash is None:
        return None
    reading = {k: getattr(settings, k) for k in ("text_column", "split", "config_name", "token_dtype")}
    identity = [FORMAT, targets, tokenizer_hash, tokenizer.eos_token_id, reading, limit]
    return hashlib.sha256(json.dumps(identity).encode("utf-8")).hexdigest()[:32]


def load(key: str) -> CachedStream | None:
    folder = cache_folder()
    try:
        meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        tokens = np.load(folder / f"{key}.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if tokens.ndim != 1 or tokens.size != meta.get("tokens"):
        return None
    return CachedStream(tokens, int(meta["documents"]), bool(meta["exhausted"]))


def save(key: str, stream: CachedStream) -> str | None:
    """Store ``stream`` under ``key``; None, or why it could not be (a read-only or full disk: the run goes on)."""
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{key}.{os.getpid()}.npy"
        np.save(temporary, np.asarray(stream.tokens, dtype=np.int32), allow_pickle=False)
        os.replace(temporary, folder / f"{key}.npy")
        meta = {"tokens": int(stream.tokens.size), "documents": stream.documents, "exhausted": stream.exhausted}
        (folder / f".{key}.{os.getpid()}.json").write_text(json.dumps(meta), encoding="utf-8")
        os.replace(folder / f".{key}.{os.getpid()}.json", folder / f"{key}.json")
    except OSError as exc:
        for leftover in folder.glob(f".{key}.{os.getpid()}.*"):
            leftover.unlink(missing_ok=True)
        return f"{type(exc).__name__}: {exc}"
    return None
