"""The ``mx`` plugin: OCP MX formats and per-tensor FP8 as newcompute paradigms.

Defaults follow the published training recipes (docs/mx.md says where each
comes from): MXFP8 with E4M3 weights and activations and E5M2 gradients
(the MX paper's and Transformer Engine's hybrid), MXFP6 in E3M2 throughout,
MXFP4 weights with MXFP6 activations and gradients (the MX paper's sub-8-bit
training configuration). Only linear layers are replaced; norms, embeddings
and the output head stay in high precision (the head through the core's
default rules), since quantizing norm affine parameters is a known source of
loss spikes (Su et al. 2025).

The quantizers and layers (and torch with them) are imported inside the
functions that build them: the CLI imports every plugin's entry point to
list paradigms, which then costs no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import newcompute
from newcompute import Paradigm, Role, hookimpl
from newcompute_mx.config import MX_CONFIGS, ROLES, FP8Config, MXConfig, QuantizedLayers
from newcompute_mx.formats import NO_QUANTIZATION

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel
    from torch import nn

    from newcompute import AttentionMatmuls, CostEstimate, MatmulShape, Statistic
    from newcompute_mx.quantizers import OperandQuantizer

newcompute_api = ">=1.0,<2"

DOCS = "docs/mx.md"
ROLES_LAYER_AND_ATTENTION = frozenset({Role.LAYER, Role.ATTENTION})


PARADIGMS: list[Paradigm] = [
    Paradigm(
        name=name,
        summary=config.__doc__ or "",
        config=config,
        roles=ROLES_LAYER_AND_ATTENTION,
        docs=DOCS,
        capturable=True,  # block scales are computed on the device, per call
    )
    for name, config in MX_CONFIGS.items()
] + [
    Paradigm(
        name="fp8",
        summary="Per-tensor scaled FP8 (Transformer Engine hybrid): E4M3 forward, E5M2 gradients, delayed or current scaling.",
        config=FP8Config,
        roles=ROLES_LAYER_AND_ATTENTION,
        docs=DOCS,
        capturable=True,  # the amax history is a buffer updated on the device
    )
]


def build_quantizer(
    config: QuantizedLayers, formats: dict[str, str], device: torch.device | None, attention: bool = False
) -> OperandQuantizer:
    """The quantizer for one layer (or one attention module: per-tensor FP8 there uses current scaling,
    since Q, K, P and V share no history). Its state lives on ``device``, the module's own, so a model
    transformed after it was moved to a GPU works as one transformed first."""
    from newcompute_mx.fp8_scaling import AmaxHistory
    from newcompute_mx.quantizers import FP8Quantizer, MXQuantizer

    if isinstance(config, MXConfig):
        return MXQuantizer(formats, config.block_size, config.scale_mode, device)
    if isinstance(config, FP8Config):
        scaling = "current" if attention else config.scaling
        history_len = config.amax_history_len if scaling == "delayed" else 1
        history = AmaxHistory(
            scaling, history_len, config.amax_compute, config.margin, config.reduce_amax, device=device
        )
        return FP8Quantizer(formats, history, device)
    raise TypeError(f"{type(config).__name__} is not a configuration of the mx plugin")


def attention_formats(config: QuantizedLayers) -> dict[str, str]:
    """Q, K, P and V take ``attention_format`` in every GEMM; the gradients ``attention_grad_format``."""
    grads = {"dgrad_grad_output", "wgrad_grad_output"}
    return {role: config.attention_grad_format if role in grads else config.attention_format for role in ROLES}


@hookimpl
def newcompute_register_paradigms() -> list[Paradigm]:
    return list(PARADIGMS)


@hookimpl
def newcompute_replace_layer(paradigm: Paradigm, config: BaseModel, name: str, module: nn.Module) -> nn.Module | None:
    from newcompute_mx.layer import QuantizedLinear

    if not newcompute.is_linear_like(module) or not isinstance(config, QuantizedLayers):
        return None
    formats = config.role_formats(name)
    if all(fmt == NO_QUANTIZATION for fmt in formats.values()):
        return None
    return QuantizedLinear(module, build_quantizer(config, formats, module.weight.device))


@hookimpl
def newcompute_attention_matmuls(
    paradigm: Paradigm, config: BaseModel, name: str, attention: nn.Module
) -> AttentionMatmuls | None:
    from newcompute_mx.attention import QuantizedAttentionMatmuls

    if not isinstance(config, QuantizedLayers) or not config.attention:
        return None
    first = next(attention.parameters(), None)
    device = first.device if first is not None else None
    return QuantizedAttentionMatmuls(build_quantizer(config, attention_formats(config), device, attention=True))


@hookimpl
def newcompute_statistics(module: nn.Module) -> dict[Statistic, torch.Tensor] | None:
    from newcompute_mx import statistics
    from newcompute_mx.attention import QuantizedAttentionMatmuls
    from newcompute_mx.layer import QuantizedLinear
    from newcompute_mx.quantizers import FP8Quantizer, MXQuantizer, OperandQuantizer

    quantizer = getattr(module, "quantizer", None)
    if not isinstance(module, (QuantizedLinear, QuantizedAttentionMatmuls)):
        return None
    if not isinstance(quantizer, OperandQuantizer):
        return None
    roles = statistics.measured_roles(quantizer.telemetry, quantizer.quantized_roles())
    delayed = isinstance(quantizer, FP8Quantizer) and quantizer.history.scaling == "delayed"
    window = quantizer.history.amax_history.shape[1] if delayed else None
    return statistics.report(quantizer.telemetry, roles, isinstance(quantizer, MXQuantizer), window)


@hookimpl
def newcompute_estimate_cost(
    paradigm: Paradigm,
    config: BaseModel,
    layers: list[MatmulShape],
    model_macs_per_token: int,
    tokens: int,
    tokens_per_step: int,
) -> CostEstimate | None:
    """Operand bytes, tensor-core throughput and energy vs bf16, from the OCP spec and NVIDIA datasheets."""
    from newcompute_mx.cost import estimate

    if not isinstance(config, QuantizedLayers):
        return None
    return estimate(config, layers)
