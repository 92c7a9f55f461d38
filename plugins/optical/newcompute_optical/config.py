"""The optical paradigm's configuration, shaped like NewComputeBench's ``transform_cfg.toml``.

NewComputeBench configures its optical fine-tuning runs with a TOML file
holding ``use_lora``, an ``[attention]`` and an ``[fc]`` table (and, for its
LoRA runs, a ``[lora]`` table). The same keys validate here unchanged, so a
study can move between the two projects with one file. ``use_lora`` and
``[lora]`` belong to the trainer: read through ``--paradigm-config
optical=FILE`` they select LoRA with those values (``newcompute.newcomputebench``);
in a ``[paradigm.optical]`` table they are only recorded, and ``--lora`` /
``--lora-rank`` decide.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from newcompute import ConfigError, CostOverrides, StrictConfig, newcomputebench_table

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

MIN_MAX = (0.0, 1.0)
"""The quantiles that are a batch's min and max."""

MAX_LEVELS = 1 << 16
"""Level indices stay below 2²², where fp32 rounding to an integer is exact; 2¹⁶ leaves margin."""


class ProductSettings(StrictConfig):
    """How one kind of optical product (``[fc]`` or ``[attention]``) is simulated."""

    q_levels: int = Field(
        256, ge=2, le=MAX_LEVELS, description="Uniform levels of every operand and of the read-out (256 = 8 bits)."
    )
    q_lut_min: float = Field(
        0.020040,
        ge=0.0,
        lt=1.0,
        description="Smallest non-zero weight magnitude the modulator's look-up table can encode, as a fraction "
        "of the weight range's largest magnitude; smaller non-zero weights snap to it. 0 (or none) disables.",
    )
    q_smooth_factor: float = Field(
        0.9, ge=0.0, le=1.0, description="Weight of the running range against each new batch's range."
    )
    q_init_seed: int = Field(0, ge=0, lt=1 << 31, description="Seed of the read-out noise.")
    q_bypass: bool = Field(False, description="Compute exactly, as the original layer does.")
    q_quantiles: tuple[float, float] = Field(
        MIN_MAX,
        description="Quantiles of each batch that its range is taken from; [0, 1] (the default, and much the "
        "fastest) are its min and max; e.g. [0.001, 0.999] is mase-triton's from_linear default.",
    )
    q_noise_per_rank: bool = Field(
        False,
        description="Give every data-parallel rank its own read-out noise; by default ranks draw the same noise.",
    )

    @field_validator("q_lut_min", mode="before")
    @classmethod
    def _none_is_no_table(cls, value: object) -> object:
        """mase-triton spells "no look-up table" None; a zero threshold is the same and fits in TOML."""
        return 0.0 if value is None else value

    @field_validator("q_quantiles", mode="before")
    @classmethod
    def _none_is_min_max(cls, value: object) -> object:
        """mase-triton spells "min and max" None; the 0 and 1 quantiles are exactly those and fit in TOML."""
        return MIN_MAX if value is None else value

    @field_validator("q_quantiles")
    @classmethod
    def _ordered_quantiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] < value[1] <= 1.0:
            raise ValueError(f"must be two quantiles with 0 <= low < high <= 1, such as [0.001, 0.999]; got {value}")
        return value

    def lut_min(self) -> float | None:
        """The look-up-table threshold, or None when it has no effect."""
        return self.q_lut_min or None

    def quantiles(self) -> tuple[float, float] | None:
        """The range quantiles, or None for min and max (which need no sort)."""
        return None if self.q_quantiles == MIN_MAX else self.q_quantiles


class LoraSettings(StrictConfig):
    """NewComputeBench's ``[lora]`` table; newcompute's trainer reads its own ``--lora-rank`` instead."""

    r: int = Field(32, gt=0, description="LoRA rank; from a --paradigm-config file with use_lora, the run's rank.")
    lora_alpha: float = Field(32, gt=0, description="LoRA scaling numerator; from such a file, the run's alpha.")


class OpticalConfig(StrictConfig):
    """The ``optical`` paradigm: ``[fc]`` for linear layers, ``[attention]`` for Q·Kᵀ and P·V."""

    use_lora: bool = Field(
        False,
        description="NewComputeBench's LoRA switch: from a --paradigm-config file it selects LoRA; in a run file's "
        "table choose LoRA with the trainer's --lora.",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    attention: ProductSettings = Field(default_factory=ProductSettings)
    fc: ProductSettings = Field(default_factory=ProductSettings)
    cost: CostOverrides = Field(
        default_factory=CostOverrides, description="Your own figures for the cost estimate (energy is not sourced)."
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        else:
            parts.append(f"'{where}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def load_newcomputebench_config(path: str | Path) -> OpticalConfig:
    """Read a NewComputeBench optical ``transform_cfg.toml`` as this paradigm's config, with NewComputeBench's
    linear-layer quantiles (0.001, 0.999) unless the file sets them (``newcompute.newcomputebench_table``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Optical config {path} does not exist (expected NewComputeBench's transform_cfg.toml).")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Optical config {path} is not valid TOML: {exc}") from None
    try:
        return OpticalConfig.model_validate(newcomputebench_table(table))
    except ValidationError as exc:
        valid = ", ".join(OpticalConfig.model_fields)
        raise ConfigError(
            f"Invalid optical config in {path}: {_describe(exc)}. Top-level keys are {valid}; "
            f"[attention] and [fc] take {', '.join(ProductSettings.model_fields)}."
        ) from None
