"""Helpers shared by test modules (not fixtures)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from newcompute.plugins import PluginRecord, Registry


def record_named(registry: Registry, distribution: str) -> PluginRecord:
    return next(r for r in registry.records if r.distribution == distribution)


def run_bounded(args: list[str], limit_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``args``; one that has not exited within ``limit_s`` fails the test instead of stalling the suite,
    and takes the processes it started (launchers, ranks: its own process group) down with it."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            pytest.fail(f"{' '.join(args)} did not exit within {limit_s} s; stderr ends: {err[-2000:]}")
    return subprocess.CompletedProcess(args, p.returncode, out, err)


_ANNOUNCED_TRAIN = """
import sys
import {module} as patched

real = patched.{attribute}

def announced(*args, **kwargs):
    print("{word}", file=sys.stderr, flush=True)
    return real(*args, **kwargs)

patched.{attribute} = announced
from newcompute.cli.app import main

sys.argv = ["newcompute", "train", "--dataset", sys.argv[1], "--steps", "1", "--block-size", "64", "-o", sys.argv[2]]
main()
"""


def announced_train_script(module: str, attribute: str, word: str) -> str:
    """A ``newcompute train DATASET OUT`` script that prints ``word`` to stderr when ``module.attribute`` starts.

    A test waits for the word, then interrupts the run at exactly that phase.
    """
    return _ANNOUNCED_TRAIN.format(module=module, attribute=attribute, word=word)
