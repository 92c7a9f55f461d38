"""LoRA adapters (through PEFT) on top of the paradigm-replaced layers.

The base layer keeps computing under its paradigm (the quantized or noisy
product) while the low-rank update ``B·A·x`` is added in ordinary
precision, which is what "adapters on top of the paradigm" means and what
NewComputeBench found learns only for small models. PEFT wraps
``nn.Linear`` and ``Conv1D`` itself; paradigm layers are
:class:`~newcompute.layers.ReplacedLinear` subclasses, which PEFT does not
know, so they are registered through PEFT's custom-module mapping with a
thin subclass of PEFT's own LoRA ``Linear``.

A finished LoRA run saves the base (transformed) model as usual and the
adapters in ``RUN/adapter`` (:data:`newcompute.record.ADAPTER_DIR`);
:func:`attach_saved_adapters` puts them back when the run is loaded.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from newcompute import weight_files
from newcompute.config import TrainSettings
from newcompute.errors import ConfigError
from newcompute.layers import ReplacedLinear, is_linear_like

try:
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.tuners.lora.layer import Linear as PeftLoraLinear
except ImportError:
    raise ConfigError(
        "LoRA needs PEFT, which is not installed: pip install 'newcompute[lora]' (or pip install peft)."
    ) from None


class ReplacedLinearLora(PeftLoraLinear):
    """PEFT's LoRA ``Linear`` around a paradigm layer; merges follow the layer's weight layout."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs: object) -> None:
        super().__init__(base_layer, adapter_name, **kwargs)
        self.fan_in_fan_out = self.get_base_layer().weight_transposed

    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features


def lora_targets(model: nn.Module) -> list[str]:
    """Qualified names of every linear or paradigm layer except the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        name
        for name, module in model.named_modules()
        if (isinstance(module, ReplacedLinear) or is_linear_like(module)) and module is not head
    ]


def _config(targets: list[str], rank: int, alpha: float, dropout: float) -> LoraConfig:
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )
    config._register_custom_module({ReplacedLinear: ReplacedLinearLora})
    return config


def add_lora(model: nn.Module, settings: TrainSettings) -> PeftModel:
    """Wrap ``model`` in a PEFT model whose only trainable parameters are the adapters."""
    targets = lora_targets(model)
    if not targets:
        raise ConfigError(f"--lora: {type(model).__name__} has no linear or paradigm layers to put adapters on.")
    return get_peft_model(model, _config(targets, settings.lora_rank, settings.lora_alpha, settings.lora_dropout))


def save_adapters(model: PeftModel, adapter: Path) -> nn.Module:
    """Write the adapters to the folder ``adapter`` and return the base model with the adapters removed."""
    model.save_pretrained(adapter)
    return model.base_model.unload()


def attach_saved_adapters(model: nn.Module, adapter: Path) -> PeftModel:
    """``model`` with the adapters saved in the folder ``adapter``."""
    weight_files.check(sorted(adapter.glob("*")), f"the LoRA adapters in {adapter}")
    saved = LoraConfig.from_pretrained(str(adapter))
    config = _config(sorted(saved.target_modules), saved.r, saved.lora_alpha, saved.lora_dropout)
    return PeftModel.from_pretrained(model, str(adapter), config=config)
