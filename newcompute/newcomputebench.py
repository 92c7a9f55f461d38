"""NewComputeBench's optical ``transform_cfg.toml``, read so that it means what it means there.

NewComputeBench configures its optical runs with one TOML file: ``use_lora``,
``[attention]`` and ``[fc]`` (the optical products' settings) and, for LoRA
runs, ``[lora]`` (``r``, ``lora_alpha``). Given as ``--paradigm-config
optical=FILE`` it is read unchanged, with NewComputeBench's behaviour where
its defaults differ from newcompute's:

* Its linear layers take their ranges from the (0.001, 0.999) quantiles of
  each batch (:data:`LINEAR_QUANTILES`), where newcompute's default is the
  min and max; a file that sets ``fc.q_quantiles`` keeps its own.
* ``use_lora = true`` trains LoRA adapters with the file's ``[lora] r`` and
  ``lora_alpha`` (``train.lora``, ``train.lora_rank``, ``train.lora_alpha``),
  unless the run file sets them; ``--set`` and flags still override.

Passed as ``--config`` (a run file), such a file is refused with the option
that reads it, since its tables are not run-file tables.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from newcompute.errors import ConfigError

KEYS = frozenset({"use_lora", "lora", "attention", "fc"})
"""The top-level keys of a NewComputeBench optical transform config."""

LINEAR_QUANTILES = [0.001, 0.999]
"""The quantiles NewComputeBench's optical linear layers take their ranges from: the default ``q_quantiles`` of
mase-triton's ``OpticalTransformerLinear.from_linear`` (mase-triton 0.0.7, ``mase_triton.optical_compute``), which
NewComputeBench uses to build them."""


def is_transform_cfg(table: dict[str, Any]) -> bool:
    """Whether ``table`` has NewComputeBench's shape: its keys, with ``use_lora``, which every such file sets."""
    return "use_lora" in table and set(table) <= KEYS


def refuse_as_run_file(path: Path, table: dict[str, Any]) -> None:
    """``--config`` on a NewComputeBench transform config: say which option reads it."""
    if is_transform_cfg(table):
        raise ConfigError(
            f"{path} is a NewComputeBench optical transform config (use_lora, [attention], [fc]), not a run file. "
            f"Pass it as --paradigm optical --paradigm-config optical={path}; it is read unchanged, with "
            "NewComputeBench's defaults (docs/optical.md)."
        )


def newcomputebench_table(table: dict[str, Any]) -> dict[str, Any]:
    """The ``[paradigm.optical]`` table of a transform config, with NewComputeBench's linear-layer quantiles."""
    adapted = copy.deepcopy(table)
    fc = adapted.setdefault("fc", {})
    if isinstance(fc, dict):
        fc.setdefault("q_quantiles", list(LINEAR_QUANTILES))
    return adapted


def lora_settings(table: dict[str, Any]) -> dict[str, Any]:
    """The ``[train]`` settings a transform config's ``use_lora`` and ``[lora]`` stand for (none without LoRA)."""
    if table.get("use_lora") is not True:
        return {}
    lora = table.get("lora", {})
    settings: dict[str, Any] = {"lora": True}
    if isinstance(lora, dict):
        names = (("r", "lora_rank"), ("lora_alpha", "lora_alpha"))
        settings |= {key: lora[name] for name, key in names if name in lora}
    return settings
