"""The conformance suite every paradigm plugin runs against its paradigms.

A plugin's test module describes its paradigm once and gets the whole suite::

    from newcompute.testing import ConformanceSpec, paradigm_conformance
    import newcompute_bitflip.plugin as plugin

    TestBitflipConformance = paradigm_conformance(
        ConformanceSpec(plugin=plugin, paradigm="bitflip", bad_tables=[{"x_p_exp": 2.0}])
    )

The ``check_*`` functions are the same checks as plain functions, for
authors who prefer to call them from their own tests. Each raises
:class:`ConformanceFailure` with a message that says what is wrong and
what the contract expects. :func:`run_ranks` runs a check on every rank of a
process group (gloo on CPU, NCCL on GPUs). Requires pytest only for
:func:`paradigm_conformance` and :func:`backend_params`.
"""

from newcompute.testing.checks_config import (
    check_bad_tables_rejected,
    check_config_documented,
    check_config_record_round_trip,
    check_defaults_validate,
    generated_bad_tables,
)
from newcompute.testing.checks_model import (
    check_attend,
    check_identity,
    check_meta_device,
    check_transform,
)
from newcompute.testing.checks_registration import check_api_declared, check_entry_point, check_registers
from newcompute.testing.checks_state import check_resume, check_save_load, check_state_dict_round_trip
from newcompute.testing.checks_telemetry import check_statistics, check_statistics_leave_outputs
from newcompute.testing.checks_training import check_composes, check_no_host_sync, check_trains
from newcompute.testing.failure import ConformanceFailure
from newcompute.testing.models import DEFAULT_FAMILIES, build_tiny, sample_batch
from newcompute.testing.partner import PARTNER_ATTENTION, PARTNER_LAYER, PartnerPlugin
from newcompute.testing.ranks import backend_params, run_ranks
from newcompute.testing.spec import ConformanceSpec
from newcompute.testing.suite import paradigm_conformance

__all__ = [
    "DEFAULT_FAMILIES",
    "PARTNER_ATTENTION",
    "PARTNER_LAYER",
    "ConformanceFailure",
    "ConformanceSpec",
    "PartnerPlugin",
    "backend_params",
    "build_tiny",
    "check_api_declared",
    "check_attend",
    "check_bad_tables_rejected",
    "check_composes",
    "check_config_documented",
    "check_config_record_round_trip",
    "check_defaults_validate",
    "check_entry_point",
    "check_identity",
    "check_meta_device",
    "check_no_host_sync",
    "check_registers",
    "check_resume",
    "check_save_load",
    "check_state_dict_round_trip",
    "check_statistics",
    "check_statistics_leave_outputs",
    "check_trains",
    "check_transform",
    "generated_bad_tables",
    "paradigm_conformance",
    "run_ranks",
    "sample_batch",
]
