"""A common base for paradigm layers that stand in for linear layers.

Transformers models use two linear kinds: ``nn.Linear`` (weight stored
``out × in``) and GPT-2's ``Conv1D`` (weight stored ``in × out``). A
replacement built on :class:`ReplacedLinear` reuses the original parameter
objects, so it keeps their names, layouts, tied weights and device (the
``meta`` device included), and a transformed model's ``state_dict`` loads
into the unmodified model and back.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


def is_linear_like(module: nn.Module) -> bool:
    """True for the module kinds :class:`ReplacedLinear` can stand in for."""
    return isinstance(module, (nn.Linear, Conv1D)) and not isinstance(module, ReplacedLinear)


class ReplacedLinear(nn.Module):
    """Base class for a paradigm's replacement of ``nn.Linear`` or ``Conv1D``.

    Subclasses implement ``forward`` and use :meth:`weight_out_in`, which is
    always ``out_features × in_features`` whatever the source layout (for
    ``Conv1D`` it is a transposed view, which matmuls consume at no copy).
    """

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        if isinstance(source, ReplacedLinear):
            raise TypeError(
                f"{type(source).__name__} is already a newcompute replacement; "
                "apply paradigms to the original model"
            )
        if isinstance(source, nn.Linear):
            self.in_features, self.out_features = source.in_features, source.out_features
            self.weight_transposed = False
        elif isinstance(source, Conv1D):
            self.in_features, self.out_features = source.weight.shape
            self.weight_transposed = True
        else:
            raise TypeError(
                f"ReplacedLinear stands in for nn.Linear or transformers Conv1D, not {type(source).__name__}"
            )
        self.weight = source.weight
        self.bias = source.bias
        self.source_type = type(source).__name__

    def weight_out_in(self) -> torch.Tensor:
        return self.weight.t() if self.weight_transposed else self.weight

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, source={self.source_type}"
        )
