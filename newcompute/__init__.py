"""newcompute: simulate how an LLM trains and behaves on hardware that computes differently.

The public API for plugin authors and users. Everything not re-exported
here is internal and may change between releases.
"""

__version__ = "0.1.0"

from newcompute.attention import AttentionMatmuls
from newcompute.composer import ComposeReport, apply, report_of, verify_attention
from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.errors import ConfigError, NewcomputeError, RunError
from newcompute.hookspecs import HOOKSPEC_VERSION, hookimpl
from newcompute.layers import ReplacedLinear, is_linear_like
from newcompute.optim import build_optimizer
from newcompute.paradigm import Paradigm, Role
from newcompute.params import OptimizerSettings, ParamInfo, ParamKind, classify_parameters
from newcompute.plugins import Registry, get_registry, load_registry
from newcompute.record import load

__all__ = [
    "HOOKSPEC_VERSION",
    "AttentionMatmuls",
    "ComposeReport",
    "ConfigError",
    "NewcomputeError",
    "OptimizerSettings",
    "ParadigmUse",
    "Paradigm",
    "ParamInfo",
    "ParamKind",
    "Registry",
    "ReplacedLinear",
    "Role",
    "RunError",
    "__version__",
    "apply",
    "build_optimizer",
    "classify_parameters",
    "get_registry",
    "hookimpl",
    "is_linear_like",
    "load",
    "load_registry",
    "report_of",
    "resolve_paradigm",
    "verify_attention",
]
