"""NorMuon for newcompute: the ``normuon`` optimizer paradigm and its optimizer.

``NorMuonAdamW`` is usable on its own (any parameter groups with an
``optimizer`` key); the plugin builds its groups from the core's parameter
classification and the ``[paradigm.normuon]`` table.
"""

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
