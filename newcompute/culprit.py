"""Saying whose code failed: the plugin, paradigm, hook and layer behind an exception.

A plugin's bug must not read as newcompute's ("Unexpected error … please
report it"): the user needs to know which plugin to report it to, and the
plugin's author which hook and layer to look at. Hook calls are attributed
where the core makes them. Modules are attributed without wrapping their
forward: :func:`tag` marks every module a paradigm installed (an attribute,
no hook, no cost per call) and :func:`blame` walks an exception's frames for
the innermost marked ``self``. A backward pass runs outside any module, so
there the plugin is found from the file its code lives in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from newcompute.paradigm import Paradigm

if TYPE_CHECKING:
    from torch import nn

OWNER_ATTR = "_newcompute_owner"
DEBUG_ENV = "NEWCOMPUTE_DEBUG"


@dataclass(frozen=True)
class Culprit:
    """Where a plugin's code failed. ``layer`` is a qualified module name, when one is known."""

    distribution: str
    version: str
    paradigm: str | None
    hook: str
    layer: str | None = None


@dataclass(frozen=True)
class Owner:
    """The paradigm that installed a module, and the layer it stands in for."""

    paradigm: Paradigm
    layer: str


def tag(module: nn.Module, paradigm: Paradigm, layer: str) -> None:
    """Mark ``module`` and its children as installed by ``paradigm`` in place of ``layer``."""
    owner = Owner(paradigm, layer)
    for child in module.modules():
        child.__dict__[OWNER_ATTR] = owner


def project_url(dist_name: str) -> str | None:
    """The project's address from the distribution's metadata: a Project-URL, else its Home-page."""
    try:
        metadata = distribution(dist_name).metadata
    except PackageNotFoundError:
        return None
    urls = [entry.partition(",")[2].strip() for entry in metadata.get_all("Project-URL") or []]
    home = metadata.get("Home-page")
    return next((url for url in [*urls, home] if url and url != "UNKNOWN"), None)


def describe(culprit: Culprit, exc: BaseException) -> str:
    """One paragraph: who failed, doing what, on which layer, and where to report it."""
    plugin = f"{culprit.distribution} {culprit.version}".strip()
    paradigm = f" (paradigm '{culprit.paradigm}')" if culprit.paradigm else ""
    layer = f" for layer '{culprit.layer}'" if culprit.layer else ""
    url = project_url(culprit.distribution)
    where = f"report it at {url}" if url else "report it to the plugin's authors (it declares no project URL)"
    debug = "" if os.environ.get(DEBUG_ENV) else f" Set {DEBUG_ENV}=1 to see the traceback."
    return (
        f"Plugin {plugin}{paradigm} failed in {culprit.hook}{layer}: {type(exc).__name__}: {exc}. "
        f"This is an error in that plugin, not in newcompute or your settings: {where}.{debug}"
    )


def _frames(exc: BaseException) -> list[tuple[object, str, str]]:
    """``(self, function name, file)`` for each frame of the traceback, innermost first."""
    frames = []
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((tb.tb_frame.f_locals.get("self"), code.co_name, code.co_filename))
        tb = tb.tb_next
    return frames[::-1]


def blame(exc: BaseException, plugins: Iterable[tuple[Path, str, str, list[str]]]) -> Culprit | None:
    """The plugin code an exception was raised in, or ``None`` if none of it is on the traceback.

    ``plugins`` gives, per plugin, the folder of its code, its distribution,
    its version and its paradigms (:meth:`newcompute.Registry.code_roots`).
    """
    frames = _frames(exc)
    backward = any(name == "backward" for _, name, _ in frames)
    phase = "the backward pass" if backward else "the forward pass"
    for self, _, _ in frames:
        owner = getattr(self, "__dict__", {}).get(OWNER_ATTR)
        if isinstance(owner, Owner):
            paradigm = owner.paradigm
            return Culprit(paradigm.plugin, paradigm.version, paradigm.name, f"{phase} of its module", owner.layer)
    roots = list(plugins)
    for _, name, file in frames:
        for root, dist, version, paradigms in roots:
            if Path(file).is_relative_to(root):
                paradigm = paradigms[0] if len(paradigms) == 1 else None
                return Culprit(dist, version, paradigm, f"{name}() during {phase}")
    return None
