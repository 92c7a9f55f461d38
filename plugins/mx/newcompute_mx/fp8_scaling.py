"""Per-tensor FP8 scales, current or delayed (Transformer Engine's two recipes).

Delayed scaling picks this step's scale from the amaxes of earlier steps, so
the cast needs no reduction over the tensor first; the history lives in a
buffer on the tensor's device (it is saved with the model, so a resumed run
continues with the same scales) and is updated without a host sync. Under
``torch.distributed`` each amax is all-reduced with ``max`` so every rank
casts with the same scale, as TE's amax reduction does.
"""

from __future__ import annotations

import enum
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from newcompute import probing
from newcompute_mx.formats import ElementFormat
from newcompute_mx.reference import tensor_scale


class TensorKind(enum.IntEnum):
    """The three tensors a linear layer's GEMMs consume."""

    INPUT = 0
    WEIGHT = 1
    GRAD_OUTPUT = 2


Scaling = Literal["delayed", "current"]


def global_amax(tensor: torch.Tensor, reduce: bool) -> torch.Tensor:
    """``max|tensor|`` as a float32 scalar on the tensor's device, agreed across ranks when ``reduce``.

    Not during the core's routing check (``probing()``): it runs on CPU,
    possibly with a GPU-only process group up, and nothing is learnt from it.
    """
    amax = tensor.detach().abs().amax().to(torch.float32)
    if reduce and not probing() and dist.is_available() and dist.is_initialized():
        dist.all_reduce(amax, op=dist.ReduceOp.MAX)
    return amax


class AmaxHistory(nn.Module):
    """The amax window of each :class:`TensorKind` of one layer, newest first."""

    def __init__(
        self,
        scaling: Scaling,
        history_len: int,
        compute: Literal["max", "most_recent"],
        margin: int,
        reduce: bool,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.scaling = scaling
        self.compute = compute
        self.margin = margin
        self.reduce = reduce
        self.register_buffer("amax_history", torch.zeros(len(TensorKind), history_len, device=device))

    def scales(
        self, kind: TensorKind, tensor: torch.Tensor, formats: list[ElementFormat]
    ) -> dict[str, torch.Tensor]:
        """The scale for casting ``tensor`` to each of ``formats``; records its amax while training.

        With delayed scaling and no history yet (the first step), the current
        amax stands in, so the first step is not cast with an arbitrary scale.
        """
        current = global_amax(tensor, self.reduce)
        if self.scaling == "current":
            reference = current
        else:
            window = self.amax_history[kind]
            past = window.amax() if self.compute == "max" else window[0]
            reference = torch.where(past > 0, past, current)
            if self.training:
                window.copy_(torch.cat([current.reshape(1), window[:-1]]))
        return {fmt.name: tensor_scale(reference, fmt, self.margin) for fmt in formats}

    def extra_repr(self) -> str:
        return (
            f"scaling={self.scaling}, history={self.amax_history.shape[1]}, compute={self.compute}, "
            f"margin={self.margin}, reduce={self.reduce}"
        )
