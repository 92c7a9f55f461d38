"""Helpers shared by test modules (not fixtures)."""

from __future__ import annotations

from newcompute.plugins import PluginRecord, Registry


def record_named(registry: Registry, distribution: str) -> PluginRecord:
    return next(r for r in registry.records if r.distribution == distribution)
