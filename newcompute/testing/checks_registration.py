"""Checks that a plugin declares itself the way the core discovers and trusts plugins."""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint, entry_points

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from newcompute.hookspecs import HOOKSPEC_VERSION
from newcompute.paradigm import Role
from newcompute.plugins import ENTRY_POINT_GROUP, PLUGINS_ENV, load_registry
from newcompute.testing.failure import ConformanceFailure, require
from newcompute.testing.spec import ConformanceSpec


def check_api_declared(spec: ConformanceSpec) -> None:
    """The plugin states the hook-spec versions it supports, and they include this core's."""
    declared = getattr(spec.plugin, "newcompute_api", None)
    require(
        declared is not None,
        f"{spec.registered_name} does not declare the plugin API it supports: add "
        f'newcompute_api = ">=1.0,<2" to the plugin module.',
    )
    try:
        supported = SpecifierSet(str(declared))
    except InvalidSpecifier:
        raise ConformanceFailure(
            f"{spec.registered_name}: newcompute_api = {declared!r} is not a PEP 440 specifier such as '>=1.0,<2'."
        ) from None
    require(
        Version(HOOKSPEC_VERSION) in supported,
        f"{spec.registered_name} supports newcompute API {declared}, but this core provides {HOOKSPEC_VERSION}.",
    )


def check_registers(spec: ConformanceSpec) -> None:
    """The plugin registers without problems and declares a usable paradigm with a config class of its own.

    ``newcompute.apply(model, SomeConfig())`` finds the paradigm from the
    config's class, so two paradigms sharing one class could not be told
    apart that way.
    """
    check_api_declared(spec)
    registry = spec.registry()
    paradigm = spec.declared(registry)
    require(bool(paradigm.summary.strip()), f"Paradigm {spec.paradigm!r} needs a one-line summary.")
    sharing = [p.name for p in registry.paradigms.values() if p.config is paradigm.config and p.name != paradigm.name]
    require(
        not sharing,
        f"Paradigm {spec.paradigm!r} shares its config class {paradigm.config.__name__} with {sharing}; give each "
        "paradigm a class of its own (a subclass holding its defaults will do), so a config instance names it.",
    )
    require(
        all(isinstance(role, Role) for role in paradigm.roles) and bool(paradigm.roles),
        f"Paradigm {spec.paradigm!r} must declare its roles as newcompute.Role values.",
    )


def _entry_point_for(spec: ConformanceSpec) -> EntryPoint:
    module = getattr(spec.plugin, "__name__", None)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value == module:
            return ep
    raise ConformanceFailure(
        f"No installed distribution has an entry point '{module}' in the '{ENTRY_POINT_GROUP}' group. Declare "
        f'[project.entry-points.{ENTRY_POINT_GROUP}] NAME = "{module}" in pyproject.toml and install the '
        "plugin (pip install -e .) before running the suite."
    )


def check_entry_point(spec: ConformanceSpec) -> None:
    """The installed entry point loads on its own, as ``NEWCOMPUTE_PLUGINS=name`` would load it."""
    ep = _entry_point_for(spec)
    previous = os.environ.get(PLUGINS_ENV)
    os.environ[PLUGINS_ENV] = ep.name
    try:
        registry = load_registry()
    finally:
        if previous is None:
            del os.environ[PLUGINS_ENV]
        else:
            os.environ[PLUGINS_ENV] = previous
    records = [r for r in registry.records if r.name == ep.name]
    require(len(records) == 1, f"Entry point {ep.name!r} was not loaded by load_registry().")
    record = records[0]
    require(
        record.status == "ok",
        f"Entry point {ep.name!r} of {record.distribution} loads with status {record.status!r}: {record.error}",
    )
    require(
        spec.paradigm in record.paradigms,
        f"Entry point {ep.name!r} registers {record.paradigms}, not {spec.paradigm!r}.",
    )
