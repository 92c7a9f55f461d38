"""Discovering, checking and calling paradigm plugins.

Plugins come from the ``newcompute`` entry-point group (the first-party ones
too) or, in tests and notebooks, from :meth:`Registry.register`. One plugin
that fails to import, declares an incompatible API range or registers a bad
paradigm is recorded with its reason and skipped; the others load.
``NEWCOMPUTE_PLUGINS=a,b`` limits loading to the named entry points or
distributions, for debugging.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ValidationError

from newcompute import hookspecs
from newcompute.errors import ConfigError
from newcompute.paradigm import RESERVED_CONFIG_KEYS, Paradigm, Role

ENTRY_POINT_GROUP = "newcompute"
PLUGINS_ENV = "NEWCOMPUTE_PLUGINS"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class PluginRecord:
    """What ``newcompute list-paradigms`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    status: str = "ok"
    error: str = ""
    paradigms: list[str] = field(default_factory=list)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _check_api(plugin: object) -> str:
    """An empty string if the plugin's declared API range admits this core, else why not."""
    declared = getattr(plugin, "newcompute_api", None)
    if declared is None:
        return ""
    try:
        spec = SpecifierSet(str(declared))
    except InvalidSpecifier:
        return f"newcompute_api = {declared!r} is not a version specifier such as '>=1.0,<2'"
    if Version(hookspecs.HOOKSPEC_VERSION) not in spec:
        return f"supports newcompute API {declared}, this core provides {hookspecs.HOOKSPEC_VERSION}"
    return ""


def _check_paradigm(item: object, taken: dict[str, Paradigm]) -> str:
    if not isinstance(item, Paradigm):
        return f"returned {type(item).__name__}, expected newcompute.Paradigm"
    if not _NAME.match(item.name):
        return f"paradigm name {item.name!r} must be lower-case letters, digits, '-', '_' or '.'"
    if item.name in taken:
        return f"paradigm {item.name!r} is already registered by {taken[item.name].plugin}"
    if not item.roles or not all(isinstance(r, Role) for r in item.roles):
        return f"paradigm {item.name!r} must declare at least one newcompute.Role"
    if not (isinstance(item.config, type) and issubclass(item.config, BaseModel)) or item.config is BaseModel:
        return f"paradigm {item.name!r}: config must be a pydantic BaseModel subclass"
    clash = RESERVED_CONFIG_KEYS & set(item.config.model_fields)
    if clash:
        return f"paradigm {item.name!r}: config fields {sorted(clash)} are reserved by the core"
    try:
        item.config()
    except ValidationError as exc:
        return f"paradigm {item.name!r}: config must have a default for every field ({exc.error_count()} missing)"
    return ""


class Registry:
    """The loaded plugins and the paradigms they provide."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.paradigms: dict[str, Paradigm] = {}
        self.records: list[PluginRecord] = []
        self._owners: dict[str, object] = {}

    def register(self, plugin: object, name: str, distribution: str = "", version: str = "") -> PluginRecord:
        """Register a plugin object (a module or instance with hook implementations)."""
        record = PluginRecord(name=name, distribution=distribution or name, version=version)
        self.records.append(record)
        reason = _check_api(plugin)
        if reason:
            record.status, record.error = "incompatible", reason
            return record
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record.status, record.error = "failed", str(exc)
            return record
        self._collect_paradigms(plugin, record)
        return record

    def _collect_paradigms(self, plugin: object, record: PluginRecord) -> None:
        caller = self._caller_for(plugin, "newcompute_register_paradigms")
        try:
            declared = [item for batch in caller() for item in (batch or [])]
        except Exception as exc:  # a plugin's bug must not break the others
            record.status, record.error = "failed", f"newcompute_register_paradigms raised {type(exc).__name__}: {exc}"
            return
        for item in declared:
            problem = _check_paradigm(item, self.paradigms)
            if problem:
                record.status = "partial"
                record.error = "; ".join(filter(None, [record.error, problem]))
                continue
            paradigm = dataclasses.replace(item, plugin=record.distribution, version=record.version)
            self.paradigms[paradigm.name] = paradigm
            self._owners[paradigm.name] = plugin
            record.paradigms.append(paradigm.name)

    def _caller_for(self, plugin: object, hook: str) -> Callable[..., Any]:
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def get(self, name: str) -> Paradigm:
        try:
            return self.paradigms[name]
        except KeyError:
            known = ", ".join(sorted(self.paradigms)) or "none installed"
            raise ConfigError(
                f"Unknown paradigm '{name}'.{did_you_mean(name, self.paradigms)} Installed paradigms: {known}. "
                "Run 'newcompute list-paradigms' to see them and any plugin that failed to load."
            ) from None

    def call(self, hook: str, paradigm: Paradigm, **kwargs: Any) -> Any:
        """Call ``hook`` on the plugin that owns ``paradigm`` only."""
        return self._caller_for(self._owners[paradigm.name], hook)(paradigm=paradigm, **kwargs)

    def add_commands(self, app: Any) -> None:
        self.pm.hook.newcompute_register_commands(app=app)


def _selected(names: set[str], ep_name: str, dist: str) -> bool:
    return not names or ep_name in names or dist in names


def load_registry(use_entry_points: bool = True) -> Registry:
    """Build a registry from the installed entry points (honouring ``NEWCOMPUTE_PLUGINS``)."""
    registry = Registry()
    if not use_entry_points:
        return registry
    wanted = {n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else ep.value
        version = ep.dist.version if ep.dist else ""
        if not _selected(wanted, ep.name, dist):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # import errors of third-party code are reported, not raised
            registry.records.append(
                PluginRecord(ep.name, dist, version, "failed", f"import failed: {type(exc).__name__}: {exc}")
            )
            continue
        registry.register(plugin, name=ep.name, distribution=dist, version=version)
    return registry


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = load_registry()
    return _default
