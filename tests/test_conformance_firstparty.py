"""The first-party plugins pass the same conformance suite third parties run.

Each is checked as installed (through its entry point), with its default
recipe and only the bad tables the suite generates from its config model.
The MX plugin registers seven paradigms; ``mxfp8`` gets the whole suite and
the others the config and single-model checks, to keep the run short.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from newcompute.testing import (
    ConformanceSpec,
    check_bad_tables_rejected,
    check_config_record_round_trip,
    check_trains,
    check_transform,
    paradigm_conformance,
)


def installed(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


OPTICAL = installed("newcompute_optical.plugin")
MX = installed("newcompute_mx.plugin")
NORMUON = installed("newcompute_normuon.plugin")


def suite(plugin: ModuleType | None, paradigm: str, **options: object) -> type:
    if plugin is None:
        class NotInstalled:
            @pytest.mark.skip(reason=f"the plugin providing {paradigm!r} is not installed")
            def test_conformance(self) -> None:
                """Placeholder so the report says which plugin was not checked."""

        return NotInstalled
    return paradigm_conformance(ConformanceSpec(plugin=plugin, paradigm=paradigm, **options))


TestOpticalConformance = suite(
    OPTICAL, "optical", identity_table={"fc": {"q_bypass": True}, "attention": {"q_bypass": True}}, gpu=True
)
TestMxfp8Conformance = suite(MX, "mxfp8")
TestNormuonConformance = suite(NORMUON, "normuon")

OTHER_MX = ["mxfp8-e5m2", "mxfp6", "mxfp6-e2m3", "mxfp4", "mxint8", "fp8"]


@pytest.mark.skipif(MX is None, reason="newcompute-mx is not installed")
@pytest.mark.parametrize("paradigm", OTHER_MX)
def test_other_mx_paradigms_conform(paradigm: str) -> None:
    spec = ConformanceSpec(plugin=MX, paradigm=paradigm)
    check_bad_tables_rejected(spec)
    check_config_record_round_trip(spec)
    check_transform(spec, "tiny-gpt2")
    check_trains(spec, "tiny")
