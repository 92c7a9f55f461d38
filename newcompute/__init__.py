"""newcompute: simulate how an LLM trains and behaves on hardware that computes differently.

The public API for plugin authors and users. Everything not re-exported
here is internal and may change between releases.

The names are imported on first use (:mod:`newcompute.lazy`), so ``import
newcompute`` and a plugin's entry point need neither torch nor transformers
until a layer or model is built. To export a name, add it to ``_EXPORTS``,
to ``__all__`` and to the ``TYPE_CHECKING`` imports (for type checkers and
the API docs); ``tests/test_core_lazy_import.py`` checks the three agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newcompute.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AttentionMatmuls": "newcompute.attention",
    "ComposeReport": "newcompute.composer",
    "ConfigError": "newcompute.errors",
    "CostEstimate": "newcompute.cost_model",
    "CostOverrides": "newcompute.cost_model",
    "LayerStatistic": "newcompute.telemetry.statistics",
    "DataSource": "newcompute.datasource",
    "Document": "newcompute.datasource",
    "HOOKSPEC_VERSION": "newcompute.hookspecs",
    "MatmulShape": "newcompute.cost_model",
    "MissingDependency": "newcompute.errors",
    "NewcomputeError": "newcompute.errors",
    "NewcomputeWarning": "newcompute.errors",
    "OptimizerSettings": "newcompute.params",
    "Paradigm": "newcompute.paradigm",
    "ParadigmUse": "newcompute.config",
    "ParamInfo": "newcompute.params",
    "ParamKind": "newcompute.params",
    "PluginError": "newcompute.errors",
    "Preset": "newcompute.presets",
    "RandomStream": "newcompute.random",
    "Registry": "newcompute.plugins",
    "ReplacedLinear": "newcompute.layers",
    "Role": "newcompute.paradigm",
    "Rules": "newcompute.rules",
    "RunError": "newcompute.errors",
    "Scope": "newcompute.composer",
    "Statistic": "newcompute.telemetry.statistics",
    "StatisticSums": "newcompute.telemetry.accumulate",
    "StrictConfig": "newcompute.paradigm",
    "apply": "newcompute.composer",
    "build_optimizer": "newcompute.optim",
    "check_pattern": "newcompute.rules",
    "classify_parameters": "newcompute.params",
    "collect_statistics": "newcompute.telemetry.accumulate",
    "collecting_statistics": "newcompute.telemetry.accumulate",
    "statistics_row_stride": "newcompute.telemetry.accumulate",
    "statistics_rows": "newcompute.telemetry.accumulate",
    "get_registry": "newcompute.plugins",
    "hookimpl": "newcompute.hookspecs",
    "is_linear_like": "newcompute.layers",
    "layer_stream": "newcompute.random",
    "lazy_exports": "newcompute.lazy",
    "load": "newcompute.record",
    "load_registry": "newcompute.plugins",
    "missing_dependency": "newcompute.errors",
    "name_matches": "newcompute.rules",
    "newcomputebench_table": "newcompute.newcomputebench",
    "philox4x32": "newcompute.random",
    "probing": "newcompute.attention",
    "products_only": "newcompute.attention",
    "read_statistics": "newcompute.telemetry.statistics",
    "report_of": "newcompute.composer",
    "resolve_paradigm": "newcompute.config",
    "verify_attention": "newcompute.composer",
}
"""Each public name and the module that defines it."""

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from newcompute.attention import AttentionMatmuls, probing, products_only
    from newcompute.composer import ComposeReport, Scope, apply, report_of, verify_attention
    from newcompute.config import ParadigmUse, resolve_paradigm
    from newcompute.cost_model import CostEstimate, CostOverrides, MatmulShape
    from newcompute.datasource import DataSource, Document
    from newcompute.errors import (
        ConfigError,
        MissingDependency,
        NewcomputeError,
        NewcomputeWarning,
        PluginError,
        RunError,
        missing_dependency,
    )
    from newcompute.hookspecs import HOOKSPEC_VERSION, hookimpl
    from newcompute.layers import ReplacedLinear, is_linear_like
    from newcompute.newcomputebench import newcomputebench_table
    from newcompute.optim import build_optimizer
    from newcompute.paradigm import Paradigm, Role, StrictConfig
    from newcompute.params import OptimizerSettings, ParamInfo, ParamKind, classify_parameters
    from newcompute.plugins import Registry, get_registry, load_registry
    from newcompute.presets import Preset
    from newcompute.random import RandomStream, layer_stream, philox4x32
    from newcompute.record import load
    from newcompute.rules import Rules, check_pattern, name_matches
    from newcompute.telemetry.accumulate import (
        StatisticSums,
        collect_statistics,
        collecting_statistics,
        statistics_row_stride,
        statistics_rows,
    )
    from newcompute.telemetry.statistics import LayerStatistic, Statistic, read_statistics

__all__ = [
    "HOOKSPEC_VERSION",
    "AttentionMatmuls",
    "ComposeReport",
    "ConfigError",
    "CostEstimate",
    "CostOverrides",
    "MatmulShape",
    "DataSource",
    "Document",
    "LayerStatistic",
    "MissingDependency",
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
    "Statistic",
    "StatisticSums",
    "StrictConfig",
    "__version__",
    "apply",
    "build_optimizer",
    "check_pattern",
    "classify_parameters",
    "collect_statistics",
    "collecting_statistics",
    "get_registry",
    "hookimpl",
    "is_linear_like",
    "layer_stream",
    "lazy_exports",
    "load",
    "load_registry",
    "missing_dependency",
    "name_matches",
    "newcomputebench_table",
    "philox4x32",
    "probing",
    "products_only",
    "read_statistics",
    "report_of",
    "resolve_paradigm",
    "statistics_row_stride",
    "statistics_rows",
    "verify_attention",
]
