"""A finished distributed run exits: DDP's reducer is freed before its process group is destroyed."""

from __future__ import annotations

import sys
from pathlib import Path

from tests_support import run_bounded

CHECK = Path(__file__).with_name("ddp_teardown_check.py")


def test_many_teardowns_on_two_gloo_processes_never_hang() -> None:
    """The script's 150 set-ups and teardowns hang within a few dozen without ``release_reducer``."""
    done = run_bounded([sys.executable, str(CHECK), "release"], limit_s=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cycles [150, 150]" in done.stdout

