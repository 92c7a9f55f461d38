"""Whether a weights file can be read, checked before loading so the error names the file.

A truncated download or copy, or a file that is not what its name says,
otherwise fails deep inside safetensors, torch or transformers with a message
that names neither the file nor the fix. These checks read only headers and
archive directories, not the tensors.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open

from newcompute.errors import ConfigError

TORCH_SUFFIXES = frozenset({".bin", ".pkl", ".pt", ".pth"})
"""Files written by ``torch.save``: zip archives since torch 1.6, a bare pickle (first byte 0x80) before."""


def problem(path: Path) -> str | None:
    """What makes ``path`` unreadable as a safetensors or torch file, or None."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt"):
                return None
        except (SafetensorError, OSError) as exc:
            return f"not a complete safetensors file ({exc})"
    if path.suffix in TORCH_SUFFIXES:
        try:
            with open(path, "rb") as file:
                head = file.read(4)
            if head[:1] == b"\x80":
                return None
            zipfile.ZipFile(path).close()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"not a complete torch file ({exc})"
    return None


def check(paths: list[Path], what: str) -> None:
    """Raise :class:`~newcompute.ConfigError` naming the first unreadable file among ``paths``."""
    for path in paths:
        found = problem(path)
        if found is not None:
            raise ConfigError(
                f"{path} is {found}: {what} cannot be loaded. The file is truncated or damaged "
                "(an interrupted download or copy?); replace it, or start from another folder."
            )
