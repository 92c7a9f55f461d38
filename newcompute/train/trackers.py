"""Experiment trackers (``--report-to``): checked before the run, started with its project and name.

Logging goes through accelerate's trackers, several at once, each under
``--project`` and ``--run-name`` (default: the run folder's name).
TensorBoard's events go to ``RUN/<project>``, recorded as the run's so
``--overwrite`` removes them with it; the other trackers log where their
own configuration says (``MLFLOW_TRACKING_URI``, ``WANDB_MODE``…), since
comparing runs in one store is what they are for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_trackio_available, is_wandb_available

from newcompute import run_files
from newcompute.config import TrainSettings
from newcompute.errors import ConfigError, RunError

_AVAILABLE: dict[str, Callable[[], Any]] = {
    "tensorboard": is_tensorboard_available,
    "wandb": is_wandb_available,
    "trackio": is_trackio_available,
    "mlflow": is_mlflow_available,
}


def checked_trackers(names: Sequence[str]) -> list[str] | None:
    """``names`` for accelerate's ``log_with``, or a ConfigError naming every tracker that is not installed."""
    missing = [name for name in names if not _AVAILABLE[name]()]
    if missing:
        raise ConfigError(
            f"train.report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install {' '.join(missing)} (or leave {'it' if len(missing) == 1 else 'them'} out of --report-to)."
        )
    return list(names) or None


def _run_names(run_name: str) -> dict[str, dict[str, Any]]:
    """Each tracker's own keyword for the run's name (TensorBoard has none: its runs are folders)."""
    return {"wandb": {"name": run_name}, "trackio": {"name": run_name}, "mlflow": {"run_name": run_name}}


def start_trackers(accelerator: Accelerator, settings: TrainSettings, run_dir: Path, config: dict[str, Any]) -> None:
    """Start the run's trackers on the main process, under ``settings.project`` and the run's name."""
    if not settings.report_to or not accelerator.is_main_process:
        return
    if "tensorboard" in settings.report_to:  # accelerate writes its events under RUN/<project>
        run_files.register(run_dir, settings.project)
    run_name = settings.run_name or run_dir.resolve().name
    try:
        accelerator.init_trackers(settings.project, config=config, init_kwargs=_run_names(run_name))
    except Exception as exc:  # a tracker's server or store refusing: the user's setup, not a newcompute bug
        raise RunError(
            f"--report-to {','.join(settings.report_to)}: a tracker could not start ({type(exc).__name__}: {exc}). "
            "Check its configuration, or leave it out of --report-to."
        ) from exc
