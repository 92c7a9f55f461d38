"""Which registered data source reads ``--dataset``, and reading it so that a plugin's failure names the plugin.

The rule: an existing file is read by the source claiming its suffix, an
existing folder file by file (sorted, files no source claims skipped);
``scheme:rest`` by the source claiming ``scheme:``; anything else that
does not look like a path is a hub id, read by the source claiming
``hf:``. Every source yields documents in a fixed order, so the same
settings always give the same token stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from newcompute.config import DataSettings
from newcompute.core_sources import BUILTIN_PYDOC, HUB_SCHEME
from newcompute.culprit import Culprit, describe
from newcompute.datasource import DataSource, Document, split_scheme
from newcompute.errors import ConfigError, NewcomputeError, PluginError
from newcompute.plugins import Registry, get_registry

class TextSource(Protocol):
    """Documents to pack, and a sentence that says what they are."""

    description: str
    bounded: bool

    def documents(self) -> Iterator[Document]: ...


@dataclass(frozen=True)
class Target:
    """One thing a data source reads: a file, or what follows a scheme."""

    source: DataSource
    target: str


@dataclass(frozen=True)
class ResolvedSource:
    """The targets ``--dataset`` names, read one after the other by the sources that claim them."""

    targets: tuple[Target, ...]
    settings: DataSettings
    registry: Registry
    description: str
    bounded: bool

    def documents(self) -> Iterator[Document]:
        for index in range(len(self.targets)):
            yield from self.target_documents(index)

    def target_documents(self, index: int) -> Iterator[Document]:
        """The documents of target ``index`` alone: a stream resumes at a file without reading those before it."""
        item = self.targets[index]
        record = self.registry.data_source_plugin(item.source.name)
        if record is self.registry.core:
            yield from item.source.read(item.target, self.settings)
        else:
            hook = f"its data source '{item.source.name}' reading '{item.target}'"
            yield from _attributed(item, self.settings, Culprit(record.distribution, record.version, None, hook))


@contextlib.contextmanager
def _blamed(culprit: Culprit) -> Iterator[None]:
    """A plugin's exception as a PluginError naming it; its ConfigError and RunError pass as they are."""
    try:
        yield
    except NewcomputeError:
        raise
    except Exception as exc:
        raise PluginError(describe(culprit, exc)) from exc


def _attributed(item: Target, settings: DataSettings, culprit: Culprit) -> Iterator[Document]:
    """A plugin source's documents, each checked to be a document."""
    with _blamed(culprit):
        for document in item.source.read(item.target, settings):
            if isinstance(document, Iterator):
                yield _attributed_pieces(document, culprit)
            elif isinstance(document, str) or _is_token_ids(document):
                yield document
            else:
                raise TypeError(
                    f"it yielded a {type(document).__name__}; a document is a str, a sequence of token ids "
                    "or an iterator of str pieces"
                )


def _attributed_pieces(pieces: Iterator[object], culprit: Culprit) -> Iterator[str]:
    with _blamed(culprit):
        for piece in pieces:
            if not isinstance(piece, str):
                raise TypeError(f"it yielded a piece of text that is a {type(piece).__name__}, not a str")
            yield piece


def _is_token_ids(document: object) -> bool:
    """A sequence or array the packer reads as ids (bytes are text someone forgot to decode, not ids)."""
    return not isinstance(document, (bytes, bytearray)) and (
        isinstance(document, Sequence) or hasattr(document, "__array__")
    )


def _valid_claims(registry: Registry) -> str:
    schemes = [c for c in registry.claims if c.endswith(":")]
    suffixes = [c for c in registry.claims if c.startswith(".")]
    return f"schemes {', '.join(schemes)} (a bare hub id means {HUB_SCHEME}ID); file suffixes {', '.join(suffixes)}"


def _local_targets(path: Path, registry: Registry) -> tuple[Target, ...]:
    if path.is_file():
        source = registry.source_for_file(path)
        if source is None:
            raise ConfigError(
                f"data.dataset: no data source reads {path} (a '{path.suffix}' file). Valid: {_valid_claims(registry)}."
            )
        return (Target(source, str(path)),)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    targets = tuple(Target(s, str(f)) for f in files if (s := registry.source_for_file(f)) is not None)
    if not targets:
        suffixes = ", ".join(c for c in registry.claims if c.startswith("."))
        raise ConfigError(f"data.dataset: folder {path} holds no files any data source reads ({suffixes}).")
    return targets


def _looks_like_path(name: str, registry: Registry) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or registry.source_for_file(name) is not None


def _folder_source(path: Path, registry: Registry) -> DataSource | None:
    """The first source (the core's first) that claims ``path`` as one dataset, such as a save_to_disk folder."""
    for source in registry.data_sources.values():
        if source.folders is None:
            continue
        record = registry.data_source_plugin(source.name)
        if record is registry.core:
            claimed = source.folders(path)
        else:
            hook = f"its data source '{source.name}' looking at folder '{path}'"
            with _blamed(Culprit(record.distribution, record.version, None, hook)):
                claimed = source.folders(path)
        if claimed:
            return source
    return None


def _local(path: Path, settings: DataSettings, registry: Registry) -> ResolvedSource:
    whole = _folder_source(path, registry) if path.is_dir() else None
    if whole is not None:
        return _named(whole, str(path), settings, registry)
    targets = _local_targets(path, registry)
    kinds = ", ".join(sorted({t.source.summary for t in targets}))
    what = f"{len(targets)} files under {path}" if path.is_dir() else str(path)
    bounded = all(t.source.bounded for t in targets)
    return ResolvedSource(targets, settings, registry, f"local {what} ({kinds})", bounded)


def _named(source: DataSource, target: str, settings: DataSettings, registry: Registry) -> ResolvedSource:
    record = registry.data_source_plugin(source.name)
    if record is registry.core:
        description = source.description(target, settings)
    else:
        hook = f"its data source '{source.name}' describing '{target}'"
        with _blamed(Culprit(record.distribution, record.version, None, hook)):
            description = source.description(target, settings)
        description += f" (data source '{source.name}' of {record.distribution})"
    return ResolvedSource((Target(source, target),), settings, registry, description, source.bounded)


def open_source(settings: DataSettings, registry: Registry | None = None) -> TextSource:
    """The source ``settings.dataset`` names, or a ConfigError that says what would be valid."""
    registry = registry or get_registry()
    name = settings.dataset
    path = Path(name)
    if path.exists():
        return _local(path, settings, registry)
    scheme = split_scheme(name)
    if scheme:
        source = registry.source_for_scheme(scheme[0])
        if source is None:
            raise ConfigError(
                f"data.dataset: no data source reads '{scheme[0]}' datasets. Valid: {_valid_claims(registry)}."
                " 'newcompute data-sources' lists them with the plugins they come from."
            )
        return _named(source, scheme[1], settings, registry)
    if _looks_like_path(name, registry):
        raise ConfigError(
            f"data.dataset: {name} does not exist. Pass an existing file or folder ({_valid_claims(registry)}), "
            f"a hub dataset id such as HuggingFaceFW/fineweb-edu, or '{BUILTIN_PYDOC}'."
        )
    hub = registry.source_for_scheme(HUB_SCHEME)
    if hub is None:
        raise ConfigError(f"data.dataset: '{name}' would be a hub dataset, but no data source claims '{HUB_SCHEME}'.")
    return _named(hub, name, settings, registry)
