"""One probe pass over a few batches: per-layer error against exact arithmetic, and the paradigms' statistics.

What ``newcompute inspect`` prints. The pass runs attention product by
product (so both products are measured), with statistics collection on and
the core's error probe attached, inside :func:`newcompute.evaluate.unchanged`
so the model (ranges, counters, random state, mode) is left as it was. The
statistics accumulated before the pass are cleared first, so the numbers are
those of these batches alone.

A row is one product: a replaced linear layer (``linear``), one of the two
attention products (``qk``, ``pv``) or, for statistics an attention paradigm
reports for the module as a whole, ``attention``. Statistics named
``qk_…``/``pv_…`` belong to that product's row, without the prefix, so one
column means the same thing on every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from newcompute.attention import products_only
from newcompute.composer import report_of
from newcompute.errors import ConfigError
from newcompute.evaluate import unchanged
from newcompute.plugins import Registry
from newcompute.telemetry.accumulate import StatisticSums, collect_statistics
from newcompute.telemetry.error import probe_errors
from newcompute.telemetry.statistics import LayerStatistic, Statistic, read_statistics

SCHEMA = "newcompute.inspect/1"
ERROR_COLUMNS = ("relative_error", "snr_db", "cosine")
PRODUCT_PREFIXES = ("qk", "pv")


@dataclass
class ProductRow:
    """One product's measurements: the core's error (``None`` where not measured) and the paradigm's statistics."""

    layer: str
    product: str
    paradigm: str = ""
    relative_error: float | None = None
    snr_db: float | None = None
    cosine: float | None = None
    statistics: dict[str, float | list[float]] = field(default_factory=dict)

    def value(self, column: str) -> float | None:
        """A scalar column's value: an error metric or a statistic, ``None`` when this row has none."""
        if column in ERROR_COLUMNS:
            return getattr(self, column)
        value = self.statistics.get(column)
        return None if isinstance(value, list) else value

    def entry(self, name: str, index: int) -> float | None:
        """Entry ``index`` of vector statistic ``name``, ``None`` when this row has none."""
        value = self.statistics.get(name)
        return value[index] if isinstance(value, list) else None


@dataclass
class InspectReport:
    """Everything ``newcompute inspect`` shows, in the order the model computes it."""

    rows: list[ProductRow]
    described: dict[str, Statistic]
    loss: float
    batches: int
    tokens: int

    def statistic_names(self) -> list[str]:
        """The scalar statistics (table, heatmap and ``--statistic`` columns)."""
        return [name for name, stat in self.described.items() if not stat.is_vector]

    def vector_names(self) -> list[str]:
        """The vector statistics (histograms, histories): in JSON as lists, in CSV one column per bin."""
        return [name for name, stat in self.described.items() if stat.is_vector]

    def _bin_columns(self) -> list[tuple[str, str, int]]:
        return [
            (f"{name}[{bin_label(b)}]", name, i)
            for name in self.vector_names()
            for i, b in enumerate(self.described[name].bins)
        ]

    def to_dict(self, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON document (schema ``newcompute.inspect/1``; an infinite SNR, an exact product, is ``null``)."""
        return {
            "schema": SCHEMA,
            **(context or {}),
            "loss": self.loss,
            "batches": self.batches,
            "tokens": self.tokens,
            "statistics": {
                name: {
                    "description": stat.description,
                    "unit": stat.unit,
                    **({"bins": list(stat.bins)} if stat.is_vector else {}),
                }
                for name, stat in self.described.items()
            },
            "rows": [
                {
                    "layer": row.layer,
                    "product": row.product,
                    "paradigm": row.paradigm,
                    **{column: _finite_or_none(row.value(column)) for column in ERROR_COLUMNS},
                    "statistics": dict(row.statistics),
                }
                for row in self.rows
            ],
        }

    def csv_header(self) -> list[str]:
        """Scalars first, then one ``NAME[BIN]`` column per bin of each vector statistic."""
        bins = [column for column, _, _ in self._bin_columns()]
        return ["layer", "product", "paradigm", *ERROR_COLUMNS, *self.statistic_names(), *bins]

    def csv_rows(self) -> list[list[str]]:
        """One line per row; an empty cell is a value the row does not have, ``inf`` an exact product."""
        scalars = [*ERROR_COLUMNS, *self.statistic_names()]
        bins = self._bin_columns()
        return [
            [
                row.layer,
                row.product,
                row.paradigm,
                *(_cell(row.value(c)) for c in scalars),
                *(_cell(row.entry(name, i)) for _, name, i in bins),
            ]
            for row in self.rows
        ]


def bin_label(value: float) -> str:
    """A bin as a column or tag suffix: ``-3`` for a whole number, else its shortest repr."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _split_prefix(name: str) -> tuple[str | None, str]:
    head, _, rest = name.partition("_")
    return (head, rest) if head in PRODUCT_PREFIXES and rest else (None, name)


def _rows(errors: list[Any], stats: list[LayerStatistic]) -> tuple[list[ProductRow], dict[str, Statistic]]:
    rows: dict[tuple[str, str], ProductRow] = {}
    for error in errors:
        rows[(error.name, error.kind)] = ProductRow(
            error.name, error.kind, relative_error=error.relative_error, snr_db=error.snr_db, cosine=error.cosine
        )
    described: dict[str, Statistic] = {}
    for stat in stats:
        product, name = _split_prefix(stat.statistic.name)
        if product is None:
            product = "linear" if (stat.layer, "linear") in rows or (stat.layer, "qk") not in rows else "attention"
        row = rows.setdefault((stat.layer, product), ProductRow(stat.layer, product))
        row.paradigm = stat.paradigm
        row.statistics[name] = stat.value
        described.setdefault(
            name, Statistic(name, stat.statistic.description, stat.statistic.unit, stat.statistic.bins)
        )
    return list(rows.values()), described


def inspect_model(
    model: nn.Module,
    blocks: np.ndarray,
    micro_batch_size: int,
    accelerator: Accelerator,
    seed: int = 0,
    registry: Registry | None = None,
) -> InspectReport:
    """Run ``blocks`` (token ids, one sequence per row) through ``model`` once, measuring every product."""
    if blocks.ndim != 2 or blocks.shape[0] == 0:
        raise ConfigError("There are no blocks to inspect: the data gave no sequences of the block size.")
    total, predicted = 0.0, 0
    with unchanged(model, seed), torch.no_grad(), products_only(), collect_statistics():
        for module in model.modules():
            if isinstance(module, StatisticSums):
                module.reset()
        with probe_errors(model) as probe:
            for start in range(0, blocks.shape[0], micro_batch_size):
                batch = torch.as_tensor(blocks[start : start + micro_batch_size], dtype=torch.long)
                batch = batch.to(accelerator.device)
                with accelerator.autocast():
                    loss = model(input_ids=batch, labels=batch, use_cache=False).loss
                count = batch.shape[0] * (batch.shape[1] - 1)
                total += float(loss) * count
                predicted += count
        errors = probe.results()
        stats = read_statistics(model, registry)
    rows, described = _rows(errors, stats)
    report = report_of(model)
    owners = report.owners if report is not None else {}
    for row in rows:
        row.paradigm = row.paradigm or owners.get(row.layer, "")
    batches = math.ceil(blocks.shape[0] / micro_batch_size)
    return InspectReport(rows, described, total / predicted, batches, predicted)
