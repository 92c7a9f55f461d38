"""``newcompute train --num-processes N``: the same command under ``accelerate launch``.

Distribution is accelerate's (DDP, or FSDP2 with ``--fsdp``); this only
builds the launcher's command line and runs it, so a user can also write
``accelerate launch [their own config] -m newcompute.train …`` directly.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from newcompute.errors import ConfigError

_FSDP2 = (
    "--use_fsdp",
    "--fsdp_version",
    "2",
    "--fsdp_auto_wrap_policy",
    "TRANSFORMER_BASED_WRAP",
    "--fsdp_state_dict_type",
    "SHARDED_STATE_DICT",
    "--fsdp_reshard_after_forward",
    "true",
    "--fsdp_cpu_ram_efficient_loading",
    "false",
)
"""accelerate's FSDP2 options. Its RAM-efficient loading (on by default) moves the model to the meta device
and then expects every state-dict entry to be a sharded parameter, which fails on the persistent buffers
paradigms keep (FP8 amax histories, optical ranges); every process builds or loads the model itself instead."""


def inside_launcher() -> bool:
    """True in a process started by a distributed launcher (torchrun, accelerate launch)."""
    return "LOCAL_RANK" in os.environ


def train_arguments(argv: list[str]) -> list[str]:
    """``newcompute train`` arguments without the launcher's own flags."""
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--num-processes":
            skip = True
            continue
        if item.startswith("--num-processes=") or item == "--fsdp":
            continue
        kept.append(item)
    return kept


def launcher_command(arguments: list[str], processes: int, fsdp: bool) -> list[str]:
    """accelerate's torchrun-based launcher; on a machine without CUDA its processes use gloo on the CPU.

    The run sets precision and compilation itself; naming accelerate's defaults for them (and for one machine)
    keeps the launcher from printing a warning that lists them as unset.
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += _FSDP2 if fsdp else ("--multi_gpu",)
    return [*command, "-m", "newcompute.train", *arguments]


def check_gpus(processes: int) -> None:
    """On a CUDA machine every process takes a GPU of its own. With too few, a rank fails after the launch in
    accelerate ("CUDA error: invalid device ordinal"), an error that names neither the flag nor the fix."""
    gpus = torch.cuda.device_count()
    if 0 < gpus < processes:
        raise ConfigError(
            f"--num-processes {processes}: this machine shows {gpus} CUDA GPU{'s' if gpus > 1 else ''} and each "
            f"process needs one of its own. Use --num-processes {gpus} or fewer "
            "(CUDA_VISIBLE_DEVICES chooses which GPUs are shown)."
        )


def relaunch(argv: list[str], processes: int, fsdp: bool) -> int:
    """Run ``newcompute train`` on ``processes`` processes and return the launcher's exit code."""
    check_gpus(processes)
    return subprocess.call(launcher_command(train_arguments(argv), processes, fsdp))
