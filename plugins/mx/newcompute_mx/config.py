"""What a user can set for each paradigm, with the published recipe as the defaults.

A linear layer runs three GEMMs, each with two operands, and each operand is
quantized along that GEMM's reduction dimension, so there are six operand
roles (see :data:`ROLES`). Every role takes an element format or ``"none"``
(left in the GEMM's dtype, e.g. bf16 under autocast). ``layers`` overrides
roles for the layers whose qualified names match, first match wins, so
"gradients in bf16 for the MLP down projections" is one table entry. Which
layers the paradigm touches at all is the core's ``include``/``exclude``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model, field_validator, model_validator

from newcompute import CostOverrides, StrictConfig, check_pattern, name_matches

FormatName = Literal["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8", "none"]
FP8_FORMATS = ("e4m3", "e5m2", "none")

ROLES: dict[str, str] = {
    "fwd_input": "X in the forward GEMM Y = X·Wᵀ, blocks along K (in_features)",
    "fwd_weight": "W in the forward GEMM Y = X·Wᵀ, blocks along K",
    "dgrad_grad_output": "dY in the input-gradient GEMM dX = dY·W, blocks along N (out_features)",
    "dgrad_weight": "W in the input-gradient GEMM dX = dY·W, blocks along N",
    "wgrad_grad_output": "dY in the weight-gradient GEMM dW = dYᵀ·X, blocks along M (tokens)",
    "wgrad_input": "X in the weight-gradient GEMM dW = dYᵀ·X, blocks along M",
}
"""The six operand roles of a linear layer, in the order the GEMMs run."""

MAX_BLOCK_SIZE = 128


class LayerOverride(StrictConfig):
    """Role formats for the layers whose qualified name matches one of ``match``; unset roles are inherited."""

    match: list[str] = Field(min_length=1, description="Glob patterns, or 're:' + a regular expression.")
    fwd_input: FormatName | None = None
    fwd_weight: FormatName | None = None
    dgrad_grad_output: FormatName | None = None
    dgrad_weight: FormatName | None = None
    wgrad_grad_output: FormatName | None = None
    wgrad_input: FormatName | None = None

    @field_validator("match")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        return [check_pattern(pattern) for pattern in patterns]


class QuantizedLayers(StrictConfig):
    """The role fields and per-layer overrides both paradigm families share."""

    fwd_input: FormatName = Field("e4m3", description=ROLES["fwd_input"])
    fwd_weight: FormatName = Field("e4m3", description=ROLES["fwd_weight"])
    dgrad_grad_output: FormatName = Field("e5m2", description=ROLES["dgrad_grad_output"])
    dgrad_weight: FormatName = Field("e4m3", description=ROLES["dgrad_weight"])
    wgrad_grad_output: FormatName = Field("e5m2", description=ROLES["wgrad_grad_output"])
    wgrad_input: FormatName = Field("e4m3", description=ROLES["wgrad_input"])
    attention: bool = Field(False, description="Also quantize attention's Q·Kᵀ and P·V (forward and backward).")
    attention_format: FormatName = Field("e4m3", description="Format of Q, K, P and V in attention's GEMMs.")
    attention_grad_format: FormatName = Field("e5m2", description="Format of the gradients in attention's GEMMs.")
    layers: list[LayerOverride] = Field(default_factory=list, description="Per-layer role overrides, first match wins.")
    cost: CostOverrides = Field(
        default_factory=CostOverrides, description="Your own figures in place of the cited cost estimates."
    )

    def role_formats(self, layer: str) -> dict[str, str]:
        """The six role formats for the layer called ``layer``."""
        formats = {role: getattr(self, role) for role in ROLES}
        override = next((o for o in self.layers if any(name_matches(p, layer) for p in o.match)), None)
        if override is not None:
            formats.update({role: getattr(override, role) for role in ROLES if getattr(override, role) is not None})
        return formats


class MXConfig(QuantizedLayers):
    """OCP MX block scaling: one E8M0 scale per ``block_size`` elements along each GEMM's reduction dimension."""

    block_size: int = Field(32, description="Elements sharing one E8M0 scale (OCP MX v1.0: 32).")
    scale_mode: Literal["floor", "ceil"] = Field(
        "floor",
        description="'floor': OCP's X = 2^(floor(log2 amax) − emax). 'ceil': X = 2^ceil(log2(amax / max_normal)) "
        "(NVIDIA/torchao RCEIL), which never clips the block maximum.",
    )

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 2 or value > MAX_BLOCK_SIZE or value & (value - 1):
            raise ValueError(f"must be a power of two from 2 to {MAX_BLOCK_SIZE} (OCP MX uses 32), got {value}")
        return value


class FP8Config(QuantizedLayers):
    """Per-tensor scaled FP8, Transformer Engine style: E4M3 forward, E5M2 gradients by default."""

    scaling: Literal["delayed", "current"] = Field(
        "delayed",
        description="'delayed': scale from the amax history of earlier steps (TE DelayedScaling). "
        "'current': scale from this tensor's own amax.",
    )
    amax_history_len: int = Field(1024, ge=1, le=65536, description="Steps of amax history kept per tensor.")
    amax_compute: Literal["max", "most_recent"] = Field("max", description="How the history becomes one amax.")
    margin: int = Field(0, ge=0, le=64, description="Scale = (max_normal / amax) / 2^margin.")
    reduce_amax: bool = Field(True, description="All-reduce (max) each amax across torch.distributed ranks.")

    @model_validator(mode="after")
    def _fp8_formats_only(self) -> FP8Config:
        used = {role: getattr(self, role) for role in ROLES}
        used |= {"attention_format": self.attention_format, "attention_grad_format": self.attention_grad_format}
        for index, override in enumerate(self.layers):
            used |= {
                f"layers[{index}].{role}": getattr(override, role)
                for role in ROLES
                if getattr(override, role) is not None
            }
        wrong = {key: value for key, value in used.items() if value not in FP8_FORMATS}
        if wrong:
            listed = ", ".join(f"{key}={value!r}" for key, value in wrong.items())
            raise ValueError(f"per-tensor FP8 supports only {', '.join(FP8_FORMATS)}; got {listed}")
        return self


def mx_config_class(class_name: str, summary: str, **defaults: object) -> type[MXConfig]:
    """An :class:`MXConfig` whose defaults are one paradigm's recipe."""
    fields: dict[str, object] = {
        name: (MXConfig.model_fields[name].annotation, Field(value, description=MXConfig.model_fields[name].description))
        for name, value in defaults.items()
    }
    return create_model(class_name, __base__=MXConfig, __doc__=summary, **fields)  # type: ignore[call-overload]


def _all(fmt: str) -> dict[str, str]:
    return {role: fmt for role in ROLES} | {"attention_format": fmt, "attention_grad_format": fmt}


MX_RECIPES: dict[str, tuple[str, dict[str, str]]] = {
    "mxfp8": ("MXFP8: E4M3 weights and activations, E5M2 gradients, 32-element E8M0 blocks.", {}),
    "mxfp8-e5m2": ("MXFP8 with E5M2 elements for every operand.", _all("e5m2")),
    "mxfp6": ("MXFP6 with E3M2 elements for every operand.", _all("e3m2")),
    "mxfp6-e2m3": ("MXFP6 with E2M3 elements for every operand.", _all("e2m3")),
    "mxfp4": (
        "MXFP4 (E2M1) weights with MXFP6 (E3M2) activations and gradients.",
        _all("e3m2") | {"fwd_weight": "e2m1", "dgrad_weight": "e2m1"},
    ),
    "mxint8": ("MXINT8: 8-bit integer elements (step 2^-6) for every operand.", _all("int8")),
}


def _class_name(paradigm: str) -> str:
    return "".join(part.capitalize() for part in paradigm.replace("-", "_").split("_")) + "Config"


MX_CONFIGS: dict[str, type[MXConfig]] = {
    name: mx_config_class(_class_name(name), summary, **defaults) for name, (summary, defaults) in MX_RECIPES.items()
}
"""One config class per MX paradigm, so ``newcompute.apply(model, Mxfp8Config())`` names the paradigm."""
Mxfp8Config = MX_CONFIGS["mxfp8"]
Mxfp8E5m2Config = MX_CONFIGS["mxfp8-e5m2"]
Mxfp6Config = MX_CONFIGS["mxfp6"]
Mxfp6E2m3Config = MX_CONFIGS["mxfp6-e2m3"]
Mxfp4Config = MX_CONFIGS["mxfp4"]
MxInt8Config = MX_CONFIGS["mxint8"]
