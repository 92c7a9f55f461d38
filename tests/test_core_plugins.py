"""The plugin registry: discovery through entry points, and refusing bad plugins without breaking others."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import newcompute as nc
from newcompute.plugins import load_registry
from tests_support import record_named


def test_entry_point_plugin_is_loaded_with_its_distribution(installed_plugins) -> None:
    registry = load_registry()
    paradigm = registry.get("halve")
    assert (paradigm.plugin, paradigm.version) == ("nc-good", "1.2.3")
    assert paradigm.roles == frozenset({nc.Role.LAYER})
    assert record_named(registry, "nc-good").status == "ok"


def test_broken_and_incompatible_plugins_are_recorded_not_raised(installed_plugins) -> None:
    registry = load_registry()
    broken = record_named(registry, "nc-broken")
    assert broken.status == "failed" and "does_not_exist_anywhere" in broken.error
    future = record_named(registry, "nc-future")
    assert future.status == "incompatible" and ">=9" in future.error and nc.HOOKSPEC_VERSION in future.error
    assert "halve" in registry.paradigms


def test_env_var_limits_which_plugins_load(installed_plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWCOMPUTE_PLUGINS", "broken")
    registry = load_registry()
    assert [r.distribution for r in registry.records] == ["nc-broken"] and "tiny" in registry.presets
    assert "halve" not in registry.paradigms


def test_unknown_paradigm_suggests_the_closest_name(registry: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match="Did you mean 'scale'"):
        registry.get("scael")


class NoDefault(BaseModel):
    needed: int


class BadPlugin:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[object]:
        return [
            nc.Paradigm("scale", "clashes with the test plugin", NoDefault, frozenset({nc.Role.LAYER})),
            nc.Paradigm("needs-value", "config without defaults", NoDefault, frozenset({nc.Role.LAYER})),
            nc.Paradigm("Bad Name", "invalid name", NoDefaultNeeded, frozenset({nc.Role.LAYER})),
            "not a paradigm",
        ]


class Reserved(BaseModel):
    include: list[str] = []


class ReservedPlugin:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("reserved", "uses a core key", Reserved, frozenset({nc.Role.LAYER}))]


def test_bad_paradigms_are_refused_each_with_a_reason(registry: nc.Registry) -> None:
    record = registry.register(BadPlugin(), name="bad")
    assert record.status == "partial"
    assert "already registered by test-plugin" in record.error
    assert "default for every field" in record.error
    assert "lower-case" in record.error
    assert "expected newcompute.Paradigm" in record.error
    assert registry.get("scale").plugin == "test-plugin"
    assert "needs-value" not in registry.paradigms
    reserved = registry.register(ReservedPlugin(), name="reserved")
    assert "reserved by the core" in reserved.error


class UnknownHook:
    @nc.hookimpl
    def newcompute_replace_layers(self) -> None:
        """Misspelt hook name: pluggy must reject it at registration."""


class Raising:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        raise RuntimeError("boom")


def test_misspelt_hook_or_raising_registration_fails_only_that_plugin(registry: nc.Registry) -> None:
    assert registry.register(UnknownHook(), name="typo").status == "failed"
    raising = registry.register(Raising(), name="raising")
    assert raising.status == "failed" and "boom" in raising.error
    assert set(registry.paradigms) >= {"scale", "exact-attn"}


class NoDefaultNeeded(BaseModel):
    level: int = 1


class OtherLayers:
    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("other", "never claims", NoDefaultNeeded, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(self, paradigm, config, name, module):  # noqa: ANN001, ANN201
        raise AssertionError("a plugin must only be asked about its own paradigms")


def test_hooks_reach_only_the_plugin_that_owns_the_paradigm(registry: nc.Registry) -> None:
    from conftest import tiny

    registry.register(OtherLayers(), name="other")
    report = nc.apply(tiny(), ["scale"], registry=registry)
    assert sum(report.replaced_types.values()) == 14
