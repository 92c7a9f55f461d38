"""Set up and tear down DDP on a fresh gloo group many times over, as a finished run does once.

Run as a script by ``test_train_teardown.py``. Without ``release_reducer``
(``python tests/ddp_teardown_check.py keep``) this hangs within the first
few dozen cycles on two CPU processes: the group is destroyed by the
reducer, with the GIL held, while a gloo worker waits for the GIL.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from newcompute.testing import run_ranks
from newcompute.train.teardown import release_reducer

CYCLES = 150


def _cycles(rank: int, device: torch.device) -> int:
    release = os.environ["TEARDOWN"] == "release"
    for _ in range(CYCLES):
        group = dist.new_group([0, 1])
        model = DistributedDataParallel(torch.nn.Linear(8, 8), process_group=group)
        model(torch.randn(4, 8)).sum().backward()
        loss = torch.ones(2)
        dist.all_reduce(loss, group=group)
        del loss
        dist.barrier(group=group)
        if release:
            release_reducer(model)
        dist.destroy_process_group(group)
        del group
        del model
    return CYCLES


if __name__ == "__main__":
    os.environ["TEARDOWN"] = sys.argv[1] if len(sys.argv) > 1 else "release"
    print("cycles", run_ranks(_cycles))
