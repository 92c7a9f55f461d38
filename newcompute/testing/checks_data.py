"""Checks that a plugin's data source reads what it claims the way the trainer needs it.

A run's token stream, and so its held-out blocks and what ``--resume`` and
``newcompute eval`` rebuild, is only reproducible if a source gives the same
documents in the same order every time it is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from newcompute.config import DataSettings
from newcompute.datasource import DataSource, split_scheme
from newcompute.plugins import Registry
from newcompute.testing.failure import ConformanceFailure, require


def _claimant(registry: Registry, dataset: str) -> tuple[DataSource, str]:
    scheme = split_scheme(dataset)
    source = registry.source_for_scheme(scheme[0]) if scheme else registry.source_for_file(dataset)
    if source is None:
        claims = ", ".join(registry.claims)
        raise ConformanceFailure(f"No data source claims {dataset!r}; the registered ones claim: {claims}.")
    return source, scheme[1] if scheme else dataset


def _as_comparable(document: Any, where: str) -> str | list[int]:
    """A document as a value two reads can be compared by: its text, or its ids as a list."""
    if isinstance(document, str):
        return document
    if isinstance(document, Iterator):
        pieces = list(document)
        bad = [type(p).__name__ for p in pieces if not isinstance(p, str)]
        require(not bad, f"{where} yielded a document in pieces with pieces that are not str: {bad[:3]}.")
        return "".join(pieces)
    ids = document.tolist() if hasattr(document, "tolist") else document
    require(
        isinstance(ids, Sequence)
        and not isinstance(ids, (bytes, bytearray))
        and all(isinstance(i, int) and not isinstance(i, bool) for i in ids),
        f"{where} yielded a {type(document).__name__}; a document is a str, a sequence of int token ids "
        "or an iterator of str pieces.",
    )
    return list(ids)


def check_data_source(
    plugin: object, dataset: str, settings: DataSettings | None = None, name: str = "plugin-under-test"
) -> list[str | list[int]]:
    """``--dataset DATASET`` is read by one of ``plugin``'s data sources, giving the same documents every time.

    The plugin must register without problems (no clash with the core's or
    its own claims), the source claiming ``dataset`` must be the plugin's,
    it must yield at least one document, every one a document, and a second
    read must give the same documents in the same order. Returns them
    (token-id documents as lists, documents in pieces joined).
    """
    registry = Registry()
    record = registry.register(plugin, name=name)
    require(record.status == "ok", f"{name} did not register cleanly ({record.status}): {record.error}")
    require(bool(record.data_sources), f"{name} registers no data source (newcompute_register_data_sources).")
    source, target = _claimant(registry, dataset)
    owner = registry.data_source_plugin(source.name)
    require(owner is record, f"{dataset!r} is read by data source {source.name!r} of {owner.distribution}, not {name}.")
    settings = settings or DataSettings(dataset=dataset)
    where = f"Data source {source.name!r} reading {target!r}"
    first = [_as_comparable(d, where) for d in source.read(target, settings)]
    require(bool(first), f"{where} yielded no documents.")
    second = [_as_comparable(d, where) for d in source.read(target, settings)]
    differ = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
    require(
        first == second,
        f"{where} gave different documents on a second read (first difference at document {differ}; "
        f"{len(first)} then {len(second)} documents): a run's token stream must not depend on when it is read.",
    )
    return first
