"""``newcompute push RUN REPO_ID``: a finished run folder to a Hugging Face model repository.

What is uploaded is what newcompute wrote into the folder (its manifest,
:mod:`newcompute.run_files`, says which files those are) less its
bookkeeping: the plain model's weights and config, the paradigms' state,
``newcompute.toml``, the tokenizer, ``metrics.jsonl``, ``summary.json``,
``lm_eval.json``, the LoRA adapters and the model card, which is written
again naming the repository. Checkpoints hold the optimizer's state and are
left out unless asked for; a user's own files in the folder are never
uploaded. Everything is checked before the first request, so an unfinished
or damaged run is refused naming the file, and nothing is half-uploaded.

``huggingface_hub`` does the uploading and finds the token as it always
does (``--token``, else ``HF_TOKEN``, else the file ``hf auth login``
wrote). A missing package, an unreachable hub or a refused token is a
:class:`~newcompute.ConfigError` (exit 2) that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newcompute import run_files, weight_files
from newcompute.errors import ConfigError
from newcompute.plugins import Registry
from newcompute.record import PARADIGM_STATE_FILE, STAGING_DIR, state_dict_files
from newcompute.train.card import CARD_FILE, finished_run, write_card
from newcompute.train.checkpoint import CHECKPOINTS, complete_checkpoints, damage
from newcompute.train.metrics import read_metrics

TEMPORARY_SUFFIX = ".tmp"
AUTH_STATUSES = (401, 403)


@dataclass(frozen=True)
class PushPlan:
    """What ``push`` sends: ``files`` (relative, ``/``-separated) of ``run_dir`` to ``repo_id``."""

    run_dir: Path
    repo_id: str
    files: list[str]
    kept_back: list[str]
    """Files in the folder that are not uploaded: the user's own, and checkpoints unless asked for."""


def _check_finished(run_dir: Path, include_checkpoints: bool) -> None:
    """Refuse an unfinished or damaged run, naming the file, before anything is sent."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder: pass the output folder of a finished 'newcompute train'.")
    finished_run(run_dir)
    read_metrics(run_dir)  # a broken line is an error naming the file and line
    weights = state_dict_files(run_dir)
    if (run_dir / PARADIGM_STATE_FILE).is_file():
        weights.append(run_dir / PARADIGM_STATE_FILE)
    weight_files.check(weights, f"the model in {run_dir}")
    if include_checkpoints:
        for folder in complete_checkpoints(run_dir):
            problem = damage(folder)
            if problem is not None:
                raise ConfigError(
                    f"{folder}: {problem}. The checkpoint is damaged; delete it, or push without --include-checkpoints."
                )


def _sendable(relative: str, include_checkpoints: bool) -> bool:
    parts = relative.split("/")
    if parts[0] in run_files.META_FILES or parts[0] == STAGING_DIR or relative.endswith(TEMPORARY_SUFFIX):
        return False
    if parts[0] == CHECKPOINTS:
        return include_checkpoints and len(parts) > 2 and parts[1].startswith("step-")
    return True


def plan_push(run_dir: Path, repo_id: str, include_checkpoints: bool = False) -> PushPlan:
    """Check the run and list what would be uploaded; sends and writes nothing."""
    run_dir = run_dir.expanduser()
    _check_finished(run_dir, include_checkpoints)
    card = run_dir / CARD_FILE
    if card.exists() and not run_files.is_owned(run_dir, CARD_FILE):
        raise ConfigError(
            f"{card} is not newcompute's model card, and push writes the card before uploading. Move your "
            "README.md out of the run folder and run the command again."
        )
    files, kept = [], []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() or p.is_symlink()):
        relative = path.relative_to(run_dir).as_posix()
        if relative.split("/")[0] in run_files.META_FILES:
            continue
        chosen = run_files.is_owned(run_dir, relative) and _sendable(relative, include_checkpoints)
        (files if chosen else kept).append(relative)
    if CARD_FILE not in files:
        files = sorted([*files, CARD_FILE])  # written before the upload
    return PushPlan(run_dir, repo_id, files, kept)


def _pattern(relative: str) -> str:
    """``relative`` as an fnmatch pattern that matches only itself (brackets, stars and ? escaped)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in relative)


def _hub() -> tuple[Any, Any, str]:
    """huggingface_hub's ``HfApi``, its ``errors`` module and the endpoint it talks to."""
    try:
        from huggingface_hub import HfApi, constants, errors
    except ImportError:
        raise ConfigError(
            "newcompute push needs the huggingface_hub package, which is not installed: pip install huggingface_hub"
        ) from None
    return HfApi, errors, constants.ENDPOINT


def _hub_error(exc: Exception, repo_id: str, endpoint: str) -> ConfigError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in AUTH_STATUSES:
        return ConfigError(
            f"push {repo_id}: the hub at {endpoint} refused the request ({status}: {exc}). Log in with "
            "'hf auth login', set HF_TOKEN, or pass --token with a token that may write to that namespace."
        )
    if status is not None:
        return ConfigError(f"push {repo_id}: the hub at {endpoint} answered {status}: {exc}")
    return ConfigError(
        f"push {repo_id}: could not reach the hub at {endpoint} ({type(exc).__name__}: {exc}). Check the network "
        "connection and HF_ENDPOINT / HF_HUB_OFFLINE, then run the command again."
    )


def push_run(
    plan: PushPlan,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    registry: Registry | None = None,
) -> str:
    """Write the card naming the repository, create the repository (and branch) and upload; returns its URL."""
    hf_api, errors, endpoint = _hub()
    write_card(plan.run_dir, plan.repo_id, registry)
    transport = getattr(errors, "HTTPError", OSError)  # httpx's, in releases on httpx; requests' errors are OSErrors
    try:
        api = hf_api(token=token)
        url = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(plan.repo_id, branch=revision, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=str(plan.run_dir),
            repo_type="model",
            revision=revision,
            allow_patterns=[_pattern(f) for f in plan.files],
            commit_message=f"newcompute push of run {plan.run_dir.resolve().name}",
        )
    except errors.HFValidationError as exc:
        raise ConfigError(f"push: {plan.repo_id!r} is not a valid repository id ({exc}); use NAMESPACE/NAME.") from None
    except (transport, OSError) as exc:
        raise _hub_error(exc, plan.repo_id, endpoint) from None
    return str(url)
