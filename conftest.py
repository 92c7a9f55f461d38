"""What every test process shares, whichever folder its tests are in.

Runs write the token cache; tests get one of their own, removed at the end,
so they neither fill the user's ``~/.cache`` nor read entries a previous
test session left there.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE_ENV = "NEWCOMPUTE_CACHE"
_OWNED = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    if _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="newcompute-test-cache-")
        config.stash[_OWNED] = os.environ[_CACHE_ENV]


def pytest_unconfigure(config: pytest.Config) -> None:
    owned = config.stash.get(_OWNED, None)
    if owned is not None:
        shutil.rmtree(owned, ignore_errors=True)

