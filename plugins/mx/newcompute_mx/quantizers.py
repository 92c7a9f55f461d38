"""Turning a GEMM operand into what the simulated hardware multiplies.

Each tensor of a linear layer feeds two GEMMs that reduce over different
dimensions: the input over K (forward) and over M (weight gradient), the
weight over K (forward) and over N (input gradient), the output gradient
over N (input gradient) and over M (weight gradient). A quantizer returns
both versions at once, as an :class:`Operand` per GEMM, so block scaling can
quantize one loaded tile both ways and per-tensor scaling can share one cast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from newcompute import ConfigError, collecting_statistics, probing, statistics_rows
from newcompute_mx import statistics
from newcompute_mx.formats import FORMAT_NAMES, FORMATS, NO_QUANTIZATION, ElementFormat
from newcompute_mx.fp8_scaling import AmaxHistory, TensorKind
from newcompute_mx.ops import PairJob, mx_fake_quantize_pairs, scaled_cast_op
from newcompute_mx.reference import ScaleMode, inverse_scale

ROLE_AXES: dict[TensorKind, tuple[str, str]] = {
    TensorKind.INPUT: ("fwd_input", "wgrad_input"),
    TensorKind.WEIGHT: ("fwd_weight", "dgrad_weight"),
    TensorKind.GRAD_OUTPUT: ("dgrad_grad_output", "wgrad_grad_output"),
}
"""For each tensor: the role reducing over its last dimension, then the role reducing over its rows."""


def element_format(name: str) -> ElementFormat | None:
    """The format called ``name``, or ``None`` for ``"none"`` (left in the GEMM dtype)."""
    if name == NO_QUANTIZATION:
        return None
    if name not in FORMATS:
        raise ConfigError(f"Unknown element format '{name}'. Valid formats: {', '.join(FORMAT_NAMES)}.")
    return FORMATS[name]


class Operand(NamedTuple):
    """A GEMM operand: ``values`` in the GEMM dtype, and a factor to apply to the product, if any.

    Block-scaled values are already decoded (``factor`` is ``None``);
    per-tensor FP8 values are the raw elements and ``factor`` is the decode
    scale, applied to the GEMM's result as FP8 hardware does.
    """

    values: torch.Tensor
    factor: torch.Tensor | None = None


Pair = tuple[Operand | None, Operand | None]
PairRequest = tuple[TensorKind, torch.Tensor, bool, bool]
"""The arguments of one :meth:`OperandQuantizer.pair` call: kind, tensor, and whether each axis is wanted."""


def _role_formats(formats: dict[str, str]) -> dict[TensorKind, tuple[ElementFormat | None, ElementFormat | None]]:
    return {kind: (element_format(formats[last]), element_format(formats[rows])) for kind, (last, rows) in ROLE_AXES.items()}


class OperandQuantizer(nn.Module):
    """Base of the two quantizer kinds; ``formats`` maps each of the six roles to a format name."""

    def __init__(self, formats: dict[str, str], device: torch.device | None = None) -> None:
        super().__init__()
        self.formats = dict(formats)
        self.by_kind = _role_formats(formats)
        self.telemetry = statistics.new_sums(device)

    def quantized_roles(self) -> list[str]:
        """The roles this quantizer quantizes (not ``"none"``), in the order :data:`statistics.ROLES` lists them."""
        return [role for role in statistics.ROLES if self.formats.get(role, NO_QUANTIZATION) != NO_QUANTIZATION]

    def pair(self, kind: TensorKind, tensor: torch.Tensor, dtype: torch.dtype, last: bool, rows: bool) -> Pair:
        """The operand for the GEMM reducing over the last dimension and for the one reducing over rows.

        ``last``/``rows`` say which are needed; the others come back ``None``.
        """
        raise NotImplementedError

    def pairs(self, requests: Sequence[PairRequest], dtype: torch.dtype) -> list[Pair]:
        """:meth:`pair` for several tensors at once, so a quantizer can serve them in one pass."""
        return [self.pair(kind, tensor, dtype, last, rows) for kind, tensor, last, rows in requests]

    def extra_repr(self) -> str:
        return ", ".join(f"{role}={fmt}" for role, fmt in self.formats.items())


def _plain(tensor: torch.Tensor, dtype: torch.dtype, needed: bool) -> Operand | None:
    return Operand(tensor.to(dtype)) if needed else None


class MXQuantizer(OperandQuantizer):
    """OCP MX block scaling along each GEMM's reduction dimension."""

    def __init__(
        self, formats: dict[str, str], block_size: int, scale_mode: ScaleMode, device: torch.device | None = None
    ) -> None:
        super().__init__(formats, device)
        self.block_size = block_size
        self.scale_mode: ScaleMode = scale_mode

    def pair(self, kind: TensorKind, tensor: torch.Tensor, dtype: torch.dtype, last: bool, rows: bool) -> Pair:
        return self.pairs([(kind, tensor, last, rows)], dtype)[0]

    def pairs(self, requests: Sequence[PairRequest], dtype: torch.dtype) -> list[Pair]:
        jobs = []
        for kind, tensor, last, rows in requests:
            last_fmt, rows_fmt = self.by_kind[kind]
            jobs.append((tensor, last_fmt if last else None, rows_fmt if rows else None))
        if collecting_statistics() and not probing():
            self._observe(requests, jobs)
        quantized = mx_fake_quantize_pairs(jobs, self.block_size, self.scale_mode, dtype)
        return [
            (
                Operand(q_last) if q_last is not None else _plain(tensor, dtype, last),
                Operand(q_rows) if q_rows is not None else _plain(tensor, dtype, rows),
            )
            for (_, tensor, last, rows), (q_last, q_rows) in zip(requests, quantized)
        ]

    def _observe(self, requests: Sequence[PairRequest], jobs: list[PairJob]) -> None:
        for (kind, tensor, _, _), (_, last_fmt, rows_fmt) in zip(requests, jobs):
            for role, axis, fmt in zip(ROLE_AXES[kind], (-1, -2), (last_fmt, rows_fmt)):
                if fmt is not None:
                    seen = tensor if kind is TensorKind.WEIGHT else statistics_rows(tensor, whole=axis)
                    statistics.observe_mx(self.telemetry, role, seen, axis, fmt, self.block_size, self.scale_mode)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_size={self.block_size}, scale_mode={self.scale_mode}"


class FP8Quantizer(OperandQuantizer):
    """Per-tensor scaled FP8: one scale per tensor, so both GEMMs can share one cast per format."""

    def __init__(self, formats: dict[str, str], history: AmaxHistory, device: torch.device | None = None) -> None:
        super().__init__(formats, device)
        self.history = history

    def pair(self, kind: TensorKind, tensor: torch.Tensor, dtype: torch.dtype, last: bool, rows: bool) -> Pair:
        wanted = [fmt for fmt, needed in zip(self.by_kind[kind], (last, rows)) if needed]
        distinct = list({fmt.name: fmt for fmt in wanted if fmt is not None}.values())
        if not distinct:
            return _plain(tensor, dtype, last), _plain(tensor, dtype, rows)
        scales = self.history.scales(kind, tensor, distinct)
        if collecting_statistics() and not probing():
            if self.history.scaling == "delayed":
                statistics.observe_window(self.telemetry, kind.name.lower(), self.history.amax_history[kind])
            for role, fmt, needed in zip(ROLE_AXES[kind], self.by_kind[kind], (last, rows)):
                if needed and fmt is not None:
                    seen = tensor if kind is TensorKind.WEIGHT else statistics_rows(tensor)
                    statistics.observe_scaled(
                        self.telemetry, role, kind.name.lower(), tensor, seen, fmt, scales[fmt.name]
                    )
        cast = {
            fmt.name: Operand(scaled_cast_op(tensor, fmt.name, scales[fmt.name], dtype), inverse_scale(scales[fmt.name]))
            for fmt in distinct
        }

        def operand(fmt: ElementFormat | None, needed: bool) -> Operand | None:
            return cast[fmt.name] if needed and fmt is not None else _plain(tensor, dtype, needed)

        last_fmt, rows_fmt = self.by_kind[kind]
        return operand(last_fmt, last), operand(rows_fmt, rows)
