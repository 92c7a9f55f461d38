"""The conformance suite as a pytest test class, built from a :class:`ConformanceSpec`.

A factory rather than a base class: the model families and dtypes to
parametrize over come from the spec, which pytest needs at collection time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from newcompute.testing.checks_config import (
    check_bad_tables_rejected,
    check_config_documented,
    check_config_record_round_trip,
    check_defaults_validate,
)
from newcompute.testing.checks_model import check_attend, check_identity, check_meta_device, check_transform
from newcompute.testing.checks_registration import check_entry_point, check_registers
from newcompute.testing.checks_state import check_resume, check_save_load, check_state_dict_round_trip
from newcompute.testing.checks_telemetry import check_statistics, check_statistics_leave_outputs
from newcompute.testing.checks_training import check_composes, check_no_host_sync, check_trains
from newcompute.testing.spec import ConformanceSpec


def _class_name(paradigm: str) -> str:
    return "Test" + "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", paradigm) if part) + "Conformance"


def paradigm_conformance(spec: ConformanceSpec, *, entry_point: bool = True) -> type:
    """A pytest class running every conformance check on ``spec``; bind it to a ``Test*`` name.

    ``entry_point=False`` skips the installed-entry-point check, for plugins
    registered only in tests. The GPU check is marked ``gpu`` and runs when
    the spec declares GPU support and CUDA is available.
    """
    families = pytest.mark.parametrize("family", list(spec.families))
    dtypes = pytest.mark.parametrize("dtype", list(spec.dtypes), ids=lambda d: str(d).removeprefix("torch."))

    class ParadigmConformance:
        def test_registers(self) -> None:
            check_registers(spec)

        @pytest.mark.skipif(not entry_point, reason="the plugin under test is not installed as a distribution")
        def test_entry_point_loads(self) -> None:
            check_entry_point(spec)

        def test_defaults_validate(self) -> None:
            check_defaults_validate(spec)

        def test_bad_tables_rejected(self) -> None:
            check_bad_tables_rejected(spec)

        def test_config_record_round_trip(self) -> None:
            check_config_record_round_trip(spec)

        def test_config_documented(self) -> None:
            check_config_documented(spec)

        @families
        @dtypes
        def test_transform_keeps_interface(self, family: str, dtype: torch.dtype) -> None:
            check_transform(spec, family, dtype)

        @families
        def test_meta_device(self, family: str) -> None:
            check_meta_device(spec, family)

        @families
        @pytest.mark.skipif(spec.identity_table is None, reason="the paradigm declares no identity table")
        def test_identity(self, family: str) -> None:
            check_identity(spec, family)

        @families
        def test_attend_matches_products(self, family: str) -> None:
            check_attend(spec, family)

        @families
        def test_state_dict_round_trip(self, family: str) -> None:
            check_state_dict_round_trip(spec, family)

        @families
        def test_save_load(self, family: str, tmp_path: Path) -> None:
            check_save_load(spec, family, tmp_path / "saved")

        @families
        @pytest.mark.skipif(not spec.deterministic, reason="the paradigm declares itself non-deterministic")
        def test_resume(self, family: str) -> None:
            check_resume(spec, family)

        @families
        def test_trains(self, family: str) -> None:
            check_trains(spec, family)

        @families
        def test_composes(self, family: str) -> None:
            check_composes(spec, family)

        @families
        def test_statistics(self, family: str) -> None:
            check_statistics(spec, family)

        @families
        @pytest.mark.skipif(not spec.deterministic, reason="the paradigm declares itself non-deterministic")
        def test_statistics_leave_outputs(self, family: str) -> None:
            check_statistics_leave_outputs(spec, family)

        @pytest.mark.gpu
        @pytest.mark.skipif(not spec.gpu, reason="the paradigm does not declare GPU support")
        @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
        def test_statistics_on_gpu(self) -> None:
            check_statistics(spec, spec.families[0], device="cuda")

        @pytest.mark.gpu
        @pytest.mark.skipif(not spec.gpu, reason="the paradigm does not declare GPU support")
        @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
        def test_no_host_sync(self) -> None:
            check_no_host_sync(spec, spec.families[0])

        @pytest.mark.gpu
        @pytest.mark.skipif(not spec.gpu, reason="the paradigm does not declare GPU support")
        @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
        def test_attend_matches_products_on_gpu(self) -> None:
            check_attend(spec, spec.families[0], device="cuda")

    name = _class_name(spec.paradigm)
    ParadigmConformance.__name__ = ParadigmConformance.__qualname__ = name
    return ParadigmConformance
