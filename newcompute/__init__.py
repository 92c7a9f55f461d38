"""newcompute: simulate how an LLM trains and behaves on hardware that computes differently.

The public API for plugin authors and users. Everything not re-exported
here is internal and may change between releases.
"""

__version__ = "0.1.0"

from newcompute.attention import AttentionMatmuls, probing, products_only
from newcompute.composer import ComposeReport, Scope, apply, report_of, verify_attention
from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.costs import CostEstimate, CostOverrides, MatmulShape
from newcompute.errors import ConfigError, NewcomputeError, NewcomputeWarning, PluginError, RunError
from newcompute.hookspecs import HOOKSPEC_VERSION, hookimpl
from newcompute.layers import ReplacedLinear, is_linear_like
from newcompute.newcomputebench import optical_table as newcomputebench_table
from newcompute.optim import build_optimizer
from newcompute.paradigm import Paradigm, Role, StrictConfig
from newcompute.params import OptimizerSettings, ParamInfo, ParamKind, classify_parameters
from newcompute.plugins import Registry, get_registry, load_registry
from newcompute.presets import Preset
from newcompute.random import RandomStream, layer_stream, philox4x32
from newcompute.record import load
from newcompute.rules import Rules, check_pattern, name_matches

__all__ = [
    "HOOKSPEC_VERSION",
    "AttentionMatmuls",
    "ComposeReport",
    "ConfigError",
    "CostEstimate",
    "CostOverrides",
    "MatmulShape",
    "NewcomputeError",
    "NewcomputeWarning",
    "OptimizerSettings",
    "ParadigmUse",
    "Paradigm",
    "ParamInfo",
    "ParamKind",
    "PluginError",
    "Preset",
    "RandomStream",
    "Registry",
    "ReplacedLinear",
    "Role",
    "Rules",
    "RunError",
    "Scope",
    "StrictConfig",
    "__version__",
    "apply",
    "build_optimizer",
    "check_pattern",
    "classify_parameters",
    "get_registry",
    "hookimpl",
    "is_linear_like",
    "layer_stream",
    "load",
    "load_registry",
    "name_matches",
    "newcomputebench_table",
    "philox4x32",
    "probing",
    "products_only",
    "report_of",
    "resolve_paradigm",
    "verify_attention",
]
