"""Which files in a run folder newcompute wrote, so that nothing else in it is ever deleted or overwritten.

A run folder may also hold what its user put there (notes, their own
``config.json``, an old ``checkpoints/old.ckpt``). newcompute deletes,
replaces or claims a path only if the folder's manifest, ``.newcompute-files``,
lists it. Anything that adds a file or folder to a run folder calls

    run_files.register(run_dir, path)          # before it writes path
    run_files.write_text(run_dir, "scores.json", text)   # register + atomic write, for small files
    run_files.move_in(run_dir, staging_folder)  # register and move in what a library wrote elsewhere

and ``--overwrite`` removes exactly the registered paths (:func:`remove_owned`).
A registered folder is owned whole (a checkpoint ``checkpoints/step-N``, the
LoRA ``adapter/``); a folder that only contains registered entries
(``checkpoints/``) is not, so a user's file beside them survives.

Crash safety: the manifest is append-only, one path per line, and a path is
registered *before* it is written, each append flushed to disk. A process
killed at any moment leaves at worst a listed path that does not exist (ignored)
or a torn last line without its newline (ignored); never a newcompute file that
the manifest does not list, which would later be mistaken for a user's.
:func:`compact` rewrites the manifest (atomically) without the paths that are
gone; it runs when a run starts, under the folder's lock.

Registering a path that already exists and is not registered is refused: it is
someone else's file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from newcompute.errors import ConfigError
from newcompute.run_lock import HOLDER_FILE, LOCK_FILE

MANIFEST = ".newcompute-files"
META_FILES = frozenset({MANIFEST, f"{MANIFEST}.tmp", LOCK_FILE, HOLDER_FILE, f"{HOLDER_FILE}.tmp"})
"""Files that keep the folder's own books (manifest, lock): never a user's, never deleted by ``--overwrite``."""


def _relative(run_dir: Path, path: Path | str) -> str:
    full = Path(path) if Path(path).is_absolute() else run_dir / path
    try:
        relative = full.resolve(strict=False).relative_to(run_dir.resolve(strict=False))
    except ValueError:
        raise ValueError(f"{path} is not inside the run folder {run_dir}") from None
    if not relative.parts or "\n" in str(relative):
        raise ValueError(f"{path} cannot be registered in {run_dir}")
    return relative.as_posix()


def registered(run_dir: Path) -> set[str]:
    """Every path the manifest lists (relative, ``/``-separated), whether or not it still exists."""
    manifest = run_dir / MANIFEST
    if not manifest.is_file():
        return set()
    text = manifest.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    return {line for line in lines[:-1] if line}  # the last piece is "" or a torn line


def _owner(relative: str, owned: set[str]) -> bool:
    parts = relative.split("/")
    return any("/".join(parts[:i]) in owned for i in range(1, len(parts) + 1))


def is_owned(run_dir: Path, path: Path | str) -> bool:
    """Whether newcompute wrote ``path`` (it, or a folder above it, is registered)."""
    return _owner(_relative(run_dir, path), registered(run_dir))


def register(run_dir: Path, *paths: Path | str) -> None:
    """Record that newcompute is about to write ``paths`` (inside ``run_dir``); call it before writing.

    Raises :class:`~newcompute.ConfigError` for a path that exists and is not
    already newcompute's: writing it would destroy a user's file.
    """
    owned = registered(run_dir)
    names = [_relative(run_dir, p) for p in paths]
    taken = [n for n in names if not _owner(n, owned) and os.path.lexists(run_dir / n)]
    if taken:
        raise ConfigError(
            f"{run_dir} holds {', '.join(taken)}, which newcompute did not write and will not replace. "
            "Move it out of the folder (or choose another output folder) and run the command again."
        )
    new = [n for n in names if n not in owned]
    if not new:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / MANIFEST, "a", encoding="utf-8") as manifest:
        manifest.write("".join(f"{n}\n" for n in new))
        manifest.flush()
        os.fsync(manifest.fileno())


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def write_text(run_dir: Path, relative: str, text: str) -> Path:
    """Register ``relative`` (and its temporary name) and write ``text`` to it atomically."""
    path = run_dir / relative
    register(run_dir, path, path.with_name(path.name + ".tmp"))
    _atomic_write(path, text)
    return path


def move_in(run_dir: Path, staging: Path) -> list[str]:
    """Move every entry of ``staging`` (a folder a library wrote into) into ``run_dir``, replacing only
    newcompute's own files; ``staging`` is removed. Returns the names moved in.

    Every name is checked and registered before the first move, so a user's
    file in the way stops the save before anything changed.
    """
    names = sorted(entry.name for entry in staging.iterdir())
    register(run_dir, *names)
    for name in names:
        _remove(run_dir / name)
        os.replace(staging / name, run_dir / name)
    staging.rmdir()
    return names


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def foreign(run_dir: Path) -> list[str]:
    """Paths in ``run_dir`` that newcompute did not write (empty folders do not count: nothing is lost)."""
    if not run_dir.is_dir():
        return []
    owned = registered(run_dir)
    found: list[str] = []

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            relative = f"{prefix}{entry.name}"
            if relative in owned or (not prefix and entry.name in META_FILES):
                continue
            if entry.is_dir() and not entry.is_symlink():
                walk(entry, relative + "/")
            else:
                found.append(relative)

    walk(run_dir, "")
    return found


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything newcompute wrote."""
    return any(os.path.lexists(run_dir / name) for name in registered(run_dir))


def remove_owned(run_dir: Path) -> None:
    """Delete every path newcompute wrote, and folders left empty by that; everything else stays."""
    owned = registered(run_dir)
    parents: set[Path] = set()
    for name in sorted(owned, key=lambda n: n.count("/"), reverse=True):
        path = run_dir / name
        _remove(path)
        parents.update(p for p in path.parents if p != run_dir and run_dir in p.parents)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    compact(run_dir)


def compact(run_dir: Path) -> None:
    """Rewrite the manifest without the paths that no longer exist (atomically; call under the folder's lock)."""
    owned = registered(run_dir)
    if not owned and not (run_dir / MANIFEST).exists():
        return
    kept = sorted(name for name in owned if os.path.lexists(run_dir / name))
    _atomic_write(run_dir / MANIFEST, "".join(f"{n}\n" for n in kept))


def describe(names: Iterable[str], shown: int = 5) -> str:
    """``a, b, c`` or ``a, b, c and 4 more``: a list of paths short enough for an error message."""
    names = list(names)
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"
