"""Discovering, checking and calling paradigm plugins.

Plugins come from the ``newcompute`` entry-point group (the first-party ones
too) or, in tests and notebooks, from :meth:`Registry.register`. Every
registry starts with the core's own plugin (:mod:`newcompute.core_plugin`,
named ``newcompute-core``), which registers the built-in presets and data
sources through the same hooks. One plugin that fails to import (even by calling
``sys.exit``), declares an incompatible API range, raises in a registration
hook or registers a bad paradigm, preset or data source is recorded with its reason and
skipped; the others load. ``NEWCOMPUTE_PLUGINS=a,b`` limits loading to the
named entry points or distributions, for debugging; a name that matches
nothing installed is reported.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ValidationError

from newcompute import __version__, core_plugin, hookspecs
from newcompute.culprit import Culprit, describe
from newcompute.datasource import SCHEME, SUFFIX, DataSource
from newcompute.errors import ConfigError, NewcomputeError, NewcomputeWarning, PluginError
from newcompute.paradigm import RESERVED_CONFIG_KEYS, Paradigm, Role
from newcompute.presets import Preset

ENTRY_POINT_GROUP = "newcompute"
PLUGINS_ENV = "NEWCOMPUTE_PLUGINS"
CORE_PLUGIN = "newcompute-core"
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
    presets: list[str] = field(default_factory=list)
    data_sources: list[str] = field(default_factory=list)

    def fail(self, status: str, problem: str) -> None:
        """Record a problem; a plugin keeps the worst status it reached (failed over partial)."""
        if self.status != "failed":
            self.status = status
        if problem not in self.error.split("; "):
            self.error = "; ".join(filter(None, [self.error, problem]))


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
        core = Version(hookspecs.HOOKSPEC_VERSION)
        hint = ""
        if core.minor and Version(f"{core.major}.0") in spec:
            hint = f" (minor versions only add hooks: declare '>={core.major}.0,<{core.major + 1}' to accept them)"
        return f"supports newcompute API {declared}, this core provides {hookspecs.HOOKSPEC_VERSION}{hint}"
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
    except Exception as exc:  # a validator's bug is the plugin's, reported like any registration problem
        return f"paradigm {item.name!r}: {item.config.__name__}() raised {type(exc).__name__}: {exc}"
    return ""


def _check_preset(item: object, taken: dict[str, tuple[Preset, str]]) -> str:
    if not isinstance(item, Preset):
        return f"returned {type(item).__name__}, expected newcompute.Preset"
    if not _NAME.match(item.name):
        return f"preset name {item.name!r} must be lower-case letters, digits, '-', '_' or '.'"
    if item.name in taken:
        return f"preset {item.name!r} is already registered by {taken[item.name][1]}"
    if not callable(item.build_config):
        return f"preset {item.name!r}: build_config must be a function returning a transformers PretrainedConfig"
    return ""


def _check_data_source(
    item: object, taken: dict[str, tuple[DataSource, PluginRecord]], claimed: dict[str, str]
) -> str:
    if not isinstance(item, DataSource):
        return f"returned {type(item).__name__}, expected newcompute.DataSource"
    if not _NAME.match(item.name):
        return f"data source name {item.name!r} must be lower-case letters, digits, '-', '_' or '.'"
    if item.name in taken:
        return f"data source {item.name!r} is already registered by {taken[item.name][1].distribution}"
    if not item.claims_anything:
        return (
            f"data source {item.name!r} claims no scheme (such as 'mydata:'), no file suffix (such as '.txt') "
            "and no folders"
        )
    if item.folders is not None and not callable(item.folders):
        return f"data source {item.name!r}: folders must be a function of a folder's path returning a bool"
    bad = [s for s in item.schemes if not SCHEME.match(s)] + [s for s in item.suffixes if not SUFFIX.match(s)]
    if bad:
        return (
            f"data source {item.name!r}: {', '.join(map(repr, bad))} is not a scheme (lower case, ending in ':', "
            "e.g. 'mydata:') or a file suffix (lower case, starting with '.', e.g. '.txt')"
        )
    for claim in item.claims:
        if claim in claimed:
            owner = taken[claimed[claim]]
            return (
                f"data source {item.name!r} claims {claim!r}, which data source {owner[0].name!r} of "
                f"{owner[1].distribution} already claims"
            )
    if not callable(item.read):
        return f"data source {item.name!r}: read must be a function yielding documents"
    return ""


def _code_root(plugin: object) -> Path | None:
    """The folder of a plugin's package, or its one file: where a traceback frame counts as its code."""
    module_name = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
    top = sys.modules.get(module_name.partition(".")[0])
    file = getattr(top, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def _guarded(record: PluginRecord, failure: str, call: Callable[[], Any]) -> Any | None:
    """``call()``, or ``None`` with the plugin marked failed: nothing a plugin raises (not even
    ``SystemExit``) may stop the others from loading. Ctrl-C still stops newcompute."""
    try:
        return call()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - isolating third-party code is the point
        record.fail("failed", f"{failure} {type(exc).__name__}: {exc}")
        return None


class Registry:
    """The loaded plugins and the paradigms and presets they provide."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.paradigms: dict[str, Paradigm] = {}
        self.records: list[PluginRecord] = []
        self.warnings: list[str] = []
        self._presets: dict[str, tuple[Preset, str]] = {}
        self._sources: dict[str, tuple[DataSource, PluginRecord]] = {}
        self._claims: dict[str, str] = {}
        self._owners: dict[str, object] = {}
        self._roots: dict[str, tuple[Path, PluginRecord]] = {}
        self.core = PluginRecord(CORE_PLUGIN, "newcompute", __version__)
        self._admit(core_plugin, self.core)

    @property
    def presets(self) -> dict[str, Preset]:
        """Every registered preset by name: the core's first, then the plugins' in loading order."""
        return {name: preset for name, (preset, _) in self._presets.items()}

    def preset_plugin(self, name: str) -> str:
        """The distribution that registered preset ``name``."""
        return self._presets[name][1]

    @property
    def data_sources(self) -> dict[str, DataSource]:
        """Every registered data source by name: the core's first, then the plugins' in loading order."""
        return {name: source for name, (source, _) in self._sources.items()}

    @property
    def claims(self) -> dict[str, DataSource]:
        """The data source behind each scheme (``builtin:``) and file suffix (``.txt``) ``--dataset`` may use."""
        return {claim: self._sources[name][0] for claim, name in self._claims.items()}

    def source_for_file(self, file: str | Path) -> DataSource | None:
        """The source claiming the longest suffix ``file``'s name ends with (``.jsonl.gz`` before ``.gz``)."""
        name = Path(file).name.lower()
        matches = [claim for claim in self._claims if claim.startswith(".") and name.endswith(claim)]
        return self._sources[self._claims[max(matches, key=len)]][0] if matches else None

    def source_for_scheme(self, scheme: str) -> DataSource | None:
        """The source claiming ``scheme`` (such as ``builtin:``), if any."""
        name = self._claims.get(scheme.lower())
        return self._sources[name][0] if name is not None else None

    def data_source_plugin(self, name: str) -> PluginRecord:
        """The plugin that registered data source ``name`` (the core's record for its own)."""
        return self._sources[name][1]

    def register(self, plugin: object, name: str, distribution: str = "", version: str = "") -> PluginRecord:
        """Register a plugin object (a module or instance with hook implementations)."""
        record = PluginRecord(name=name, distribution=distribution or name, version=version)
        self.records.append(record)
        reason = _check_api(plugin)
        if reason:
            record.status, record.error = "incompatible", reason
            return record
        self._admit(plugin, record)
        return record

    def _admit(self, plugin: object, record: PluginRecord) -> None:
        try:
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record.status, record.error = "failed", str(exc)
            return
        root = _code_root(plugin)
        if root is not None and plugin is not core_plugin:
            self._roots[record.name] = (root, record)
        self._collect_paradigms(plugin, record)
        self._collect_presets(plugin, record)
        self._collect_data_sources(plugin, record)

    def _registered(
        self, plugin: object, record: PluginRecord, hook: str, check: Callable[[Any], str]
    ) -> Iterator[Any]:
        """What ``plugin``'s registration ``hook`` returned, item by item, less the items ``check`` refuses.

        A refused item marks the plugin ``partial`` with the reason and the
        others still register, so one bad declaration never hides a plugin.
        """
        batches = _guarded(record, f"{hook} raised", self._caller_for(plugin, hook))
        for item in [item for batch in batches or [] for item in (batch or [])]:
            problem = check(item)
            if problem:
                record.fail("partial", problem)
                continue
            yield item

    def _collect_paradigms(self, plugin: object, record: PluginRecord) -> None:
        check = partial(_check_paradigm, taken=self.paradigms)
        for item in self._registered(plugin, record, "newcompute_register_paradigms", check):
            paradigm = dataclasses.replace(item, plugin=record.distribution, version=record.version)
            self.paradigms[paradigm.name] = paradigm
            self._owners[paradigm.name] = plugin
            record.paradigms.append(paradigm.name)

    def _collect_presets(self, plugin: object, record: PluginRecord) -> None:
        check = partial(_check_preset, taken=self._presets)
        for item in self._registered(plugin, record, "newcompute_register_presets", check):
            self._presets[item.name] = (item, record.distribution)
            record.presets.append(item.name)

    def _collect_data_sources(self, plugin: object, record: PluginRecord) -> None:
        check = partial(_check_data_source, taken=self._sources, claimed=self._claims)
        for item in self._registered(plugin, record, "newcompute_register_data_sources", check):
            self._sources[item.name] = (item, record)
            self._claims.update(dict.fromkeys(item.claims, item.name))
            record.data_sources.append(item.name)

    def _caller_for(self, plugin: object, hook: str) -> Callable[..., Any]:
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def failed(self) -> list[PluginRecord]:
        """Plugins that did not load completely, with their reasons."""
        return [r for r in self.records if r.status != "ok"]

    def get(self, name: str) -> Paradigm:
        try:
            return self.paradigms[name]
        except KeyError:
            known = ", ".join(sorted(self.paradigms)) or "none installed"
            raise ConfigError(
                f"Unknown paradigm '{name}'.{did_you_mean(name, self.paradigms)} Installed paradigms: {known}."
                f"{self._failed_note(name)} Run 'newcompute list-paradigms' to see them and any plugin that "
                "failed to load."
            ) from None

    def _failed_note(self, wanted: str) -> str:
        """Why a missing paradigm may be missing: the plugins that did not load, the likeliest first."""
        broken = [r for r in self.failed() if r.status != "partial" or not r.paradigms]
        if not broken:
            return ""
        broken.sort(key=lambda r: wanted not in f"{r.name} {r.distribution}")
        listed = "; ".join(f"{r.distribution} ({r.status}: {r.error})" for r in broken)
        return f" It may come from a plugin that failed to load: {listed}."

    def paradigm_for_config(self, config: BaseModel) -> Paradigm:
        """The one paradigm whose config class is exactly ``type(config)``."""
        cls = type(config)
        exact = [p for p in self.paradigms.values() if p.config is cls]
        if len(exact) == 1:
            return exact[0]
        if exact:
            names = ", ".join(p.name for p in exact)
            raise ConfigError(
                f"{cls.__name__} is the config of several paradigms ({names}), so a config instance cannot say "
                f"which one to apply. Name it instead, e.g. ('{exact[0].name}', config.model_dump())."
            )
        related = [p for p in self.paradigms.values() if issubclass(p.config, cls) or issubclass(cls, p.config)]
        if related:
            listed = ", ".join(f"{p.config.__name__} for '{p.name}'" for p in related)
            hint = f"Use the config class of the paradigm you mean: {listed}."
        else:
            known = ", ".join(f"{p.name} ({p.config.__name__})" for p in self.paradigms.values()) or "none"
            package = cls.__module__.partition(".")[0].replace("_", "-")
            hint = f"Installed paradigms and their config classes: {known}.{self._failed_note(package)}"
        raise ConfigError(f"No installed paradigm has the config class {cls.__module__}.{cls.__name__}. {hint}")

    def call(self, hook: str, paradigm: Paradigm, **kwargs: Any) -> Any:
        """Call ``hook`` on the plugin that owns ``paradigm`` only; its failure names it."""
        caller = self._caller_for(self._owners[paradigm.name], hook)
        try:
            return caller(paradigm=paradigm, **kwargs)
        except NewcomputeError:
            raise
        except Exception as exc:
            layer = kwargs.get("name")
            culprit = Culprit(paradigm.plugin, paradigm.version, paradigm.name, hook, layer)
            raise PluginError(describe(culprit, exc)) from exc

    def code_roots(self) -> list[tuple[Path, str, str, list[str]]]:
        """Per loaded plugin: its code's folder, distribution, version and paradigms (for attributing errors)."""
        return [(root, r.distribution, r.version, r.paradigms) for root, r in self._roots.values()]

    def add_commands(self, app: Any) -> None:
        """Each plugin adds its commands; one that raises is marked failed and its partial commands removed."""
        for plugin in self.pm.get_plugins():
            record = next((r for r in self.records if self.pm.get_plugin(r.name) is plugin), None)
            if record is None:
                continue
            kept = (list(app.registered_commands), list(app.registered_groups))
            caller = self._caller_for(plugin, "newcompute_register_commands")
            before = record.status
            _guarded(record, "newcompute_register_commands raised", lambda caller=caller: caller(app=app))
            if record.status != before:
                app.registered_commands[:], app.registered_groups[:] = kept


def _selected(names: set[str], ep_name: str, dist: str) -> bool:
    return not names or ep_name in names or dist in names


def load_registry(use_entry_points: bool = True) -> Registry:
    """Build a registry from the installed entry points (honouring ``NEWCOMPUTE_PLUGINS``)."""
    registry = Registry()
    if not use_entry_points:
        return registry
    wanted = {n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()}
    found: set[str] = set()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else ep.value
        version = ep.dist.version if ep.dist else ""
        found |= {ep.name, dist}
        if not _selected(wanted, ep.name, dist):
            continue
        record = PluginRecord(ep.name, dist, version)
        plugin = _guarded(record, "import failed:", ep.load)
        if plugin is None:
            registry.records.append(record)
            continue
        registry.register(plugin, name=ep.name, distribution=dist, version=version)
    for name in sorted(wanted - found):
        message = (
            f"{PLUGINS_ENV} names '{name}', which is no installed plugin's entry point or distribution."
            f"{did_you_mean(name, found)} Installed: {', '.join(sorted(found)) or 'none'}."
        )
        registry.warnings.append(message)
        registry.records.append(PluginRecord(name, name, "", "not found", message))
    for message in registry.warnings:
        warnings.warn(message, NewcomputeWarning, stacklevel=2)
    return registry


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _default
    if _default is None:
        _default = load_registry()
    return _default
