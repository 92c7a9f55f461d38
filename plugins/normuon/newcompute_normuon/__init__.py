"""NorMuon for newcompute: the ``normuon`` optimizer paradigm and its optimizer.

``NorMuonAdamW`` is usable on its own (any parameter groups with an
``optimizer`` key); the plugin builds its groups from the core's parameter
classification and the ``[paradigm.normuon]`` table. The names below are
imported on first use (:func:`newcompute.lazy_exports`), so that importing
the entry point, as ``newcompute list-paradigms`` does, needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newcompute import lazy_exports

_EXPORTS = {
    "DEFAULTS": "newcompute_normuon.optimizer",
    "POLAR_EXPRESS": "newcompute_normuon.coefficients",
    "QUINTIC": "newcompute_normuon.coefficients",
    "FusedMatrix": "newcompute_normuon.config",
    "NorMuonAdamW": "newcompute_normuon.optimizer",
    "NorMuonConfig": "newcompute_normuon.config",
    "ParamOverride": "newcompute_normuon.config",
    "ReferenceNorMuon": "newcompute_normuon.reference",
    "Schedule": "newcompute_normuon.coefficients",
    "build_groups": "newcompute_normuon.wiring",
    "orthogonalize": "newcompute_normuon.newton_schulz",
    "reference_orthogonalize": "newcompute_normuon.reference",
    "schedule": "newcompute_normuon.coefficients",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from newcompute_normuon.coefficients import POLAR_EXPRESS, QUINTIC, Schedule, schedule
    from newcompute_normuon.config import FusedMatrix, NorMuonConfig, ParamOverride
    from newcompute_normuon.newton_schulz import orthogonalize
    from newcompute_normuon.optimizer import DEFAULTS, NorMuonAdamW
    from newcompute_normuon.reference import ReferenceNorMuon, reference_orthogonalize
    from newcompute_normuon.wiring import build_groups

__all__ = [
    "DEFAULTS",
    "POLAR_EXPRESS",
    "QUINTIC",
    "FusedMatrix",
    "NorMuonAdamW",
    "NorMuonConfig",
    "ParamOverride",
    "ReferenceNorMuon",
    "Schedule",
    "build_groups",
    "orthogonalize",
    "reference_orthogonalize",
    "schedule",
]
