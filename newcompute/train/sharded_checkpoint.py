"""Resuming an FSDP2 run's sharded checkpoint in processes that do not shard (one process, or DDP).

accelerate writes an FSDP2 checkpoint with ``torch.distributed.checkpoint``
(DCP): the model's state dict under ``"model"`` in ``pytorch_model_fsdp_0/``
and the optimizer's, keyed by parameter name, under ``"optimizer"`` in
``optimizer_0/``. DCP reshards as it loads, so the same files fill the
unsharded model and optimizer of the same run, whatever the number of
processes now. accelerate's ``load_state`` reads only the layout of the
distribution it runs under; this covers the way from shards to whole.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

from newcompute.errors import ConfigError

MODEL_SHARDS = "pytorch_model_fsdp_0"
OPTIMIZER_SHARDS = "optimizer_0"


def is_sharded(folder: Path) -> bool:
    """Whether ``folder`` is a checkpoint that FSDP2 wrote in shards."""
    return (folder / MODEL_SHARDS).is_dir()


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fill the unsharded ``model`` and ``optimizer`` from the FSDP2 checkpoint in ``folder``.

    The optimizer comes first: to name its state by parameter, torch gives
    an optimizer without state one step with zero gradients and a zero
    learning rate, and loading the weights afterwards leaves nothing of
    what that step did.
    """
    missing = [name for name in (MODEL_SHARDS, OPTIMIZER_SHARDS) if not (folder / name).is_dir()]
    if missing:
        raise ConfigError(
            f"{folder} is not a complete FSDP2 checkpoint: {', '.join(missing)} is missing. "
            "Resume from another checkpoint of the run, or start again with --overwrite."
        )
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=folder / OPTIMIZER_SHARDS)
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    weights = {"model": model.state_dict()}
    dcp.load(weights, checkpoint_id=folder / MODEL_SHARDS)
    model.load_state_dict(weights["model"])
