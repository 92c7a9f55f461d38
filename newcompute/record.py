"""Saving a transformed model so it can be rebuilt exactly, and loading it back.

A saved folder holds what ``save_pretrained`` writes (config, safetensors
weights, tokenizer), the paradigms' own state (buffers such as the optical
ranges) in ``paradigm_state.safetensors``, and a ``newcompute.toml``
recording the model settings and every paradigm's validated config and
rules. The weights file holds exactly the plain model's keys, so
``AutoModelForCausalLM.from_pretrained(folder)`` without newcompute loads
the trained model with no unexpected-key warnings; :func:`load` reads both
files back (a folder written before the split, with everything in the
weights file, loads the same way). That file is a valid run config, so a run can
be repeated from it with ``newcompute train --config``. Its ``[record]``
table says what wrote it, down to each paradigm's distribution and
version: a plugin's numerics may change between its releases, so loading
or resuming under another version warns, naming both.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import tomli_w
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from newcompute import __version__, run_files, weight_files
from newcompute.composer import apply, report_of
from newcompute.config import ParadigmUse, RunConfig, load_run_config, resolve_paradigms
from newcompute.errors import ConfigError, NewcomputeWarning, RunError
from newcompute.models import check_remote_code, tokenizer_for
from newcompute.plugins import Registry, get_registry

RECORD_FILE = "newcompute.toml"
ADAPTER_DIR = "adapter"
STAGING_DIR = ".tmp-save"
PARADIGM_STATE_FILE = "paradigm_state.safetensors"
"""The state paradigms add to the model (buffers of replaced layers and attention products), kept out of the
plain model's weights file."""


def paradigm_versions(uses: list[ParadigmUse]) -> dict[str, dict[str, str]]:
    """``{paradigm: {"distribution": …, "version": …}}``: which release of which plugin computed each paradigm."""
    return {use.name: {"distribution": use.paradigm.plugin, "version": use.paradigm.version} for use in uses}


def version_changes(recorded: dict[str, Any], uses: list[ParadigmUse]) -> list[str]:
    """For each paradigm recorded under another plugin release than the installed one, what changed."""
    changes = []
    then = recorded.get("paradigms", {})
    for name, now in paradigm_versions(uses).items():
        old = then.get(name)
        if isinstance(old, dict) and {k: old.get(k) for k in now} != now:
            changes.append(
                f"paradigm '{name}' was recorded with {old.get('distribution')} {old.get('version')}, "
                f"and {now['distribution']} {now['version']} is installed now"
            )
    return changes


def warn_version_changes(what: str, recorded: dict[str, Any], uses: list[ParadigmUse]) -> None:
    changes = version_changes(recorded, uses)
    if changes:
        warnings.warn(
            f"{what}: {'; '.join(changes)}. Its numerics may differ from the recorded run's.",
            NewcomputeWarning,
            stacklevel=3,
        )


def run_record(run: RunConfig, model: nn.Module) -> dict[str, Any]:
    """The run config as applied: paradigm tables hold the validated values, not just what was typed."""
    report = report_of(model)
    uses = report.uses if report else []
    data = run.model_dump(mode="json", exclude_none=True)
    data["paradigm"] = {use.name: use.to_table() for use in uses}
    data["record"] = {"paradigms": paradigm_versions(uses)}
    return data


def save_transformed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run: RunConfig,
    folder: Path,
) -> None:
    """Write the model, its tokenizer and ``newcompute.toml`` into ``folder``.

    They are written into a staging folder first and then moved in, so every
    file is registered as newcompute's (:mod:`newcompute.run_files`) and a
    user's file of the same name stops the save instead of being replaced.
    """
    staging = folder / STAGING_DIR
    run_files.register(folder, staging)
    shutil.rmtree(staging, ignore_errors=True)
    plain, paradigm_state = split_state(model)
    model.save_pretrained(staging, state_dict=plain)
    if paradigm_state:
        save_file(paradigm_state, str(staging / PARADIGM_STATE_FILE))
    tokenizer.save_pretrained(staging)
    record = run_record(run, model)
    record["record"] |= {"newcompute_version": __version__, "model_class": type(model).__name__}
    (staging / RECORD_FILE).write_text(tomli_w.dumps(record), encoding="utf-8")
    run_files.move_in(folder, staging)
    stale = folder / PARADIGM_STATE_FILE
    if not paradigm_state and stale.is_file() and run_files.is_owned(folder, stale):
        stale.unlink()  # an earlier save's paradigm state would not match this model


def plain_keys(model: PreTrainedModel) -> set[str]:
    """The state-dict keys of ``model``'s architecture as transformers builds it, without any paradigm.

    Built on the meta device from a copy of the config, so it costs no memory
    and leaves the model's config as it was.
    """
    with torch.device("meta"):
        plain = type(model)(copy.deepcopy(model.config))
    return set(plain.state_dict())


def split_state(model: PreTrainedModel) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``model``'s state dict as (what the plain model has, what the paradigms added).

    A replaced layer keeps its source's parameter names (``weight``,
    ``bias``), so its weights land in the first part and its buffers in the
    second.
    """
    keep = plain_keys(model)
    state = model.state_dict()
    plain = {name: tensor for name, tensor in state.items() if name in keep}
    added = {name: tensor.detach().clone() for name, tensor in state.items() if name not in keep}
    return plain, added


def state_dict_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{index} is not a safetensors index ({exc!r}): the saved model is damaged.") from None
        return [folder / shard for shard in shards]
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ConfigError(f"{folder} has no model.safetensors (or index); it was not written by newcompute.")
    return [single]


def _load_weights(model: nn.Module, folder: Path) -> None:
    state: dict[str, Any] = {}
    files = state_dict_files(folder)
    if (folder / PARADIGM_STATE_FILE).is_file():
        files.append(folder / PARADIGM_STATE_FILE)
    weight_files.check(files, f"the saved model in {folder}")
    for file in files:
        state.update(load_file(str(file)))
    result = model.load_state_dict(state, strict=False)
    tied = _tied_names(model)
    missing = [name for name in result.missing_keys if name not in tied]
    if missing or result.unexpected_keys:
        raise RunError(
            f"{folder}: saved weights do not match the rebuilt model "
            f"(missing: {missing[:5]}, unexpected: {result.unexpected_keys[:5]}). "
            "Were the paradigms or the plugin versions changed since it was saved?"
        )


def _tied_names(model: nn.Module) -> set[str]:
    """Parameter names that share their tensor with another name; saved files keep only one of them."""
    names_by_tensor: dict[int, list[str]] = defaultdict(list)
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_tensor[id(param)].append(name)
    return {name for names in names_by_tensor.values() if len(names) > 1 for name in names}


def read_record(folder: Path) -> RunConfig:
    path = folder / RECORD_FILE
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no {RECORD_FILE}: it is not a folder saved by newcompute "
            "(use 'newcompute transform --save' or a train run's output folder)."
        )
    return load_run_config(path)


def load(
    folder: str | Path, registry: Registry | None = None, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Rebuild a saved transformed model exactly: architecture, paradigms, weights, paradigm state, LoRA adapters.

    A folder whose model brings its own code (``auto_map``) is refused unless
    ``trust_remote_code=True``: a run folder from elsewhere must not run code
    because it was opened.
    """
    folder = Path(folder).expanduser()
    run = read_record(folder)
    registry = registry or get_registry()
    check_remote_code(folder, trust_remote_code)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    report = apply(model, resolve_paradigms(registry, run), registry=registry)
    warn_version_changes(f"{folder}", run.record, report.uses)
    _load_weights(model, folder)
    tokenizer, _ = tokenizer_for(str(folder), model, trust_remote_code)
    if (folder / ADAPTER_DIR).is_dir():
        from newcompute.lora import attach_saved_adapters  # peft is optional: only LoRA runs need it

        model = attach_saved_adapters(model, folder / ADAPTER_DIR)
    return model, tokenizer
