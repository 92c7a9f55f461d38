"""How many CPU threads torch computes with: by default, the cores this process may use.

torch starts one intra-op thread per core of the machine, whatever the
process is allowed to run on. On a shared machine (a CPU quota, ``taskset``,
a CI runner) that oversubscribes the cores it was given, and every step
waits on threads that cannot run. ``--threads N`` (``train.threads``) sets
the number; without it, it is the size of this process's CPU affinity set.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on (its affinity set), or every core where the OS cannot say."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def use_threads(threads: int | None) -> str:
    """Set torch's intra-op threads to ``threads`` (default :func:`available_cores`); return what was chosen, as
    a line for the run summary."""
    import torch

    count = threads or available_cores()
    torch.set_num_threads(count)
    return f"{count} (--threads)" if threads else f"{count} (the cores this process may use; --threads to change)"
