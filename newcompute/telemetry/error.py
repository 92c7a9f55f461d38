"""Core-measured error: each simulated product against the exact one on the same inputs.

The measurement needs nothing from the paradigm, so every replaced linear
layer and every intercepted attention product is measured the same way
whatever plugin produced it. A probe pass wraps each of them: the simulated
output is compared with ``F.linear`` (or ``torch.matmul``) on the very inputs
the simulated product received. Sums are accumulated in preallocated
float64 device tensors with in-place ops, so the pass adds no host sync; the
host reads them once, in :meth:`ErrorProbe.results`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from newcompute.attention import MATMULS_ATTR
from newcompute.layers import ReplacedLinear

# Sums kept per product: Σ(out−ref)², Σref², Σout², Σout·ref.
_ERR, _REF, _OUT, _DOT = range(4)


@dataclass(frozen=True)
class ProductError:
    """Error of one simulated product over every element the probe pass saw."""

    name: str
    kind: str
    relative_error: float
    snr_db: float
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "relative_error": self.relative_error,
            "snr_db": self.snr_db,
            "cosine": self.cosine,
        }


def _summarise(name: str, kind: str, sums: list[float]) -> ProductError:
    err, ref, out, dot = sums
    relative = math.sqrt(err / ref) if ref > 0 else (0.0 if err == 0 else math.inf)
    snr = math.inf if err == 0 else (10 * math.log10(ref / err) if ref > 0 else -math.inf)
    cosine = dot / math.sqrt(ref * out) if ref > 0 and out > 0 else (1.0 if err == 0 else 0.0)
    return ProductError(name, kind, relative, snr, cosine)


class ErrorProbe:
    """Accumulates, per product, the sums that relative error, SNR and cosine need."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], torch.Tensor] = {}

    def _accumulate(self, key: tuple[str, str], out: torch.Tensor, ref: torch.Tensor) -> None:
        sums = self._sums.get(key)
        if sums is None:
            sums = self._sums[key] = torch.zeros(4, dtype=torch.float64, device=out.device)
        out64, ref64 = out.detach().double(), ref.detach().double()
        sums[_ERR].add_((out64 - ref64).square().sum())
        sums[_REF].add_(ref64.square().sum())
        sums[_OUT].add_(out64.square().sum())
        sums[_DOT].add_((out64 * ref64).sum())

    def results(self) -> list[ProductError]:
        """Read the sums (the one host sync) and turn them into per-product errors."""
        return [_summarise(name, kind, sums.tolist()) for (name, kind), sums in self._sums.items()]


def _exact_linear(module: ReplacedLinear, x: torch.Tensor) -> torch.Tensor:
    weight = module.weight_out_in()
    return F.linear(x.to(weight.dtype), weight, module.bias)


def _wrap_product(
    probe: ErrorProbe, key: tuple[str, str], simulated: Callable[..., torch.Tensor]
) -> Callable[..., torch.Tensor]:
    def measured(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = simulated(a, b)
        with torch.no_grad():
            probe._accumulate(key, out, torch.matmul(a.to(out.dtype), b.to(out.dtype)))
        return out

    return measured


def _wrap_qk(probe: ErrorProbe, name: str, simulated: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def measured(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        out = simulated(query, key)
        with torch.no_grad():
            exact = torch.matmul(query.to(out.dtype), key.to(out.dtype).transpose(-1, -2))
            probe._accumulate((name, "qk"), out, exact)
        return out

    return measured


def _layer_name(name: str) -> str:
    """A layer's name as the compose report has it: PEFT nests a LoRA-wrapped layer as ``NAME.base_layer``."""
    return name.removesuffix(".base_layer")


@contextmanager
def probe_errors(model: nn.Module) -> Iterator[ErrorProbe]:
    """Measure every replaced linear layer and attention product while the block runs.

    Inside the block, run forward passes as usual (under ``torch.no_grad``
    for speed, or training steps: the exact products are computed without
    autograd, so backward is unchanged); on leaving it the model is as it was. Fused attention
    (``AttentionMatmuls.attend``) is declined during the probe so that the
    two products are measured one by one.
    """
    probe = ErrorProbe()
    handles = []
    patched: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, ReplacedLinear):

            def hook(
                mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor, _name: str = _layer_name(name)
            ) -> None:
                with torch.no_grad():
                    probe._accumulate((_name, "linear"), out, _exact_linear(mod, args[0]))  # type: ignore[arg-type]

            handles.append(module.register_forward_hook(hook))
        matmuls = module._modules.get(MATMULS_ATTR) if isinstance(module, nn.Module) else None
        if matmuls is not None:
            matmuls.qk = _wrap_qk(probe, name, matmuls.qk)
            matmuls.pv = _wrap_product(probe, (name, "pv"), matmuls.pv)
            matmuls.attend = lambda *args, **kwargs: None
            patched.append(matmuls)
    try:
        yield probe
    finally:
        for handle in handles:
            handle.remove()
        for matmuls in patched:
            for attr in ("qk", "pv", "attend"):
                matmuls.__dict__.pop(attr, None)
