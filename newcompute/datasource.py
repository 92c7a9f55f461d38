"""What ``--dataset`` can name: data sources, as plugins (the core included) register them.

A source claims datasets by URI scheme (``mydata:``, matched on the text
before the first colon) and/or by file suffix (``.txt``, matched on the end
of a file's name, so ``.jsonl.gz`` works too). The trainer finds the one
source that claims what the user typed and calls its ``read``; this module
only defines what a source is, so plugins can build one from ``newcompute``
alone and the trainer can read any of them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from newcompute.config import DataSettings

Document = Union[str, Sequence[int], Iterator[str]]
"""One document: its text; its token ids (used as they are, so they must come from the model's tokenizer);
or an iterator of pieces of text that together make one document, for a document too large to hold at once."""

SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:$")
SUFFIX = re.compile(r"^\.[a-z0-9][a-z0-9._-]*$")
_SCHEME_PREFIX = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:)(?!//)")
"""``name:`` at the start of a dataset; ``://`` is left out so that a URL is not read as a scheme of ours."""


def split_scheme(dataset: str) -> tuple[str, str] | None:
    """``("mydata:", "abc")`` for ``mydata:abc`` (the scheme in lower case), or None without a scheme."""
    found = _SCHEME_PREFIX.match(dataset)
    return (found.group(1).lower(), dataset[found.end() :]) if found else None


@dataclass(frozen=True)
class DataSource:
    """A kind of training data, as registered by ``newcompute_register_data_sources``.

    ``read(target, settings)`` yields the documents of one target, in a
    fixed order (the same settings must give the same token stream): for a
    scheme, ``target`` is what follows it (``mydata:abc`` gives ``abc``);
    for a suffix, it is the path of one file (a folder is read file by
    file, in sorted order, each by the source claiming its suffix).
    ``settings`` is the run's ``[data]`` table (``text_column``, ``split``…).
    Raise :class:`newcompute.ConfigError` for input the user can fix; any
    other exception is reported as an error of the plugin.

    ``folders(path)`` claims whole folders: it says whether an existing
    folder is one dataset this source reads (such as what ``save_to_disk``
    writes) rather than a folder of files; ``read`` then gets the folder's
    path. ``bounded`` says the source ends (the trainer then reads it all,
    not just the run's budget). ``describe(target, settings)`` phrases what
    is read for the run's summary; without it, the summary and the target.
    """

    name: str
    summary: str
    read: Callable[[str, DataSettings], Iterable[Document]]
    schemes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    bounded: bool = True
    describe: Callable[[str, DataSettings], str] | None = None
    folders: Callable[[Path], bool] | None = None

    @property
    def claims(self) -> tuple[str, ...]:
        """Every scheme and suffix this source reads, as the user would type them."""
        return (*self.schemes, *self.suffixes)

    @property
    def claims_anything(self) -> bool:
        return bool(self.claims) or self.folders is not None

    def description(self, target: str, settings: DataSettings) -> str:
        if self.describe is not None:
            return self.describe(target, settings)
        return f"{self.summary}: {target}"
