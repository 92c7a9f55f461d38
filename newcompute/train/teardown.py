"""Letting go of DDP's reducer before the process group, so a finished run exits instead of hanging."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel


def release_reducer(model: nn.Module) -> None:
    """Free the reducer of a DDP-wrapped ``model`` now, while its process group is still registered.

    DDP's reducer (and its logger) hold a reference to the process group.
    Once ``destroy_process_group`` has dropped the registry's reference,
    the reducer is the last holder, and freeing the model destroys the
    group with the GIL held. Destroying a gloo group joins its worker
    threads; one that is still releasing a finished collective needs the
    GIL to free that collective's tensors, and the process hangs for good.
    Freed first, the reducer only drops its reference. The wrapper cannot
    run a backward pass afterwards, so call this when training is over.
    """
    if isinstance(model, DistributedDataParallel):
        for attribute in ("logger", "reducer"):
            if hasattr(model, attribute):
                delattr(model, attribute)
