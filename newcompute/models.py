"""Turning a model name into a model and tokenizer, and saying what was used.

A name is a preset, a local folder (``config.json`` plus weights, as
``save_pretrained`` writes) or a hub id. ``init="scratch"`` builds from the
configuration with random weights; ``"auto"`` loads weights when they can be
had and otherwise builds from scratch, and in every case
:attr:`LoadedModel.source` says which happened, so nothing falls back
silently.

A model that brings its own Python code (``auto_map`` in its config or
tokenizer config) is loaded only with ``trust_remote_code=True``, which
only the command line's ``--trust-remote-code`` (or a keyword from Python)
sets; without it the load is refused, never quietly done with a built-in
class instead.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from newcompute import weight_files
from newcompute.config import ModelSettings
from newcompute.errors import ConfigError
from newcompute.plugins import Registry, did_you_mean, get_registry
from newcompute.presets import Preset
from newcompute.tokenizer import BYTE_VOCAB_SIZE, byte_tokenizer

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    init: str
    tokenizer_source: str


def _dtype(settings: ModelSettings) -> torch.dtype:
    return _DTYPES.get(settings.dtype, torch.float32)


def _scratch(config: PretrainedConfig, settings: ModelSettings, trust: bool) -> PreTrainedModel:
    return AutoModelForCausalLM.from_config(config, dtype=_dtype(settings), trust_remote_code=trust)


def _needs_code(name: str) -> ConfigError:
    return ConfigError(
        f"{name} brings its own Python code (auto_map), which newcompute runs only when asked: pass "
        "--trust-remote-code on the command line (trust_remote_code=True from Python), and only if you trust "
        f"the code of {name}."
    )


def check_remote_code(folder: Path, trust: bool) -> None:
    """Refuse a local model folder whose config or tokenizer config maps classes to its own code, unless trusted.

    Checked before transformers reads the folder: with a model type it knows,
    transformers would ignore the mapping and build its own class instead.
    """
    if trust:
        return
    for name in ("config.json", "tokenizer_config.json"):
        try:
            mapping = json.loads((folder / name).read_text(encoding="utf-8")).get("auto_map")
        except (OSError, ValueError, AttributeError):
            continue
        if mapping:
            raise _needs_code(f"{folder} ({name})")


@cache
def hub_reachable() -> bool:
    """Whether the model hub answers; if not, switch this process to the hub's offline mode.

    Offline mode makes transformers read the local cache only. Without it,
    every hub lookup on a machine with no network spends most of a minute in
    retries before failing.
    """
    if hub_constants.is_offline_mode():
        return False
    host = urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub_constants.HF_HUB_OFFLINE = True
        return False
    return True


def _pretrained(source: str, settings: ModelSettings, trust: bool) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(
        source,
        dtype=_dtype(settings) if settings.dtype != "auto" else "auto",
        revision=settings.revision,
        trust_remote_code=trust,
        local_files_only=not Path(source).exists() and not hub_reachable(),
    )


def tokenizer_for(
    source: str | None, model: PreTrainedModel, trust_remote_code: bool = False
) -> tuple[PreTrainedTokenizerBase, str]:
    if source is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source,
                local_files_only=not Path(source).exists() and not hub_reachable(),
                trust_remote_code=trust_remote_code,
            )
            return tokenizer, f"the tokenizer of {source}"
        except (OSError, ValueError):
            pass
    vocab = model.config.get_text_config().vocab_size
    if vocab < BYTE_VOCAB_SIZE:
        raise ConfigError(
            f"The model's vocabulary has {vocab} entries and no tokenizer was found"
            f"{f' at {source}' if source else ''}; the built-in byte tokenizer needs at least {BYTE_VOCAB_SIZE}."
        )
    where = f"no tokenizer found at {source}; " if source else ""
    return byte_tokenizer(), f"{where}the built-in byte-level tokenizer ({BYTE_VOCAB_SIZE} ids, no download)"


def _has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) for pattern in _WEIGHT_FILES)


def _load_preset(preset: Preset, settings: ModelSettings, trust: bool) -> LoadedModel:
    if preset.hub_id is None or settings.init == "scratch":
        if settings.init == "pretrained":
            raise ConfigError(f"Preset '{preset.name}' has no published weights; use --init scratch.")
        model = _scratch(preset.build_config(), settings, trust)
        source = f"preset '{preset.name}' built from its embedded config with random weights"
        tokenizer, tok_source = tokenizer_for(None, model)
        return LoadedModel(model, tokenizer, source, "scratch", tok_source)
    try:
        model = _pretrained(preset.hub_id, settings, trust)
    except OSError as exc:
        if settings.init == "pretrained":
            raise ConfigError(
                f"Could not load the weights of preset '{preset.name}' from {preset.hub_id}: {exc}. "
                "Pass --init scratch to build it with random weights, or a local folder as --model."
            ) from None
        model = _scratch(preset.build_config(), settings, trust)
        source = (
            f"preset '{preset.name}': weights of {preset.hub_id} could not be loaded (offline?), "
            "so it was built from its embedded config with random weights"
        )
        tokenizer, tok_source = tokenizer_for(None, model)
        return LoadedModel(model, tokenizer, source, "scratch", tok_source)
    tokenizer, tok_source = tokenizer_for(preset.hub_id, model, trust)
    return LoadedModel(model, tokenizer, f"pretrained weights of {preset.hub_id}", "pretrained", tok_source)


def _load_folder(folder: Path, settings: ModelSettings, trust: bool, presets: dict[str, Preset]) -> LoadedModel:
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{folder} is not a model folder: it has no config.json. Pass a folder written by save_pretrained, "
            f"a preset ({', '.join(presets)}) or a hub id."
        )
    check_remote_code(folder, trust)
    scratch = settings.init == "scratch" or (settings.init == "auto" and not _has_weights(folder))
    if scratch:
        if settings.init == "pretrained":
            raise ConfigError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin).")
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        model = _scratch(config, settings, trust)
        reason = "as asked" if settings.init == "scratch" else "since it holds no weights"
        source = f"{folder}: config only, random weights ({reason})"
    else:
        if not _has_weights(folder):
            raise ConfigError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin); use --init scratch.")
        weight_files.check([p for pattern in _WEIGHT_FILES for p in sorted(folder.glob(pattern))], f"the model in {folder}")
        model = _pretrained(str(folder), settings, trust)
        source = f"pretrained weights from {folder}"
    tokenizer, tok_source = tokenizer_for(str(folder), model, trust)
    return LoadedModel(model, tokenizer, source, "scratch" if scratch else "pretrained", tok_source)


def _load_hub(name: str, settings: ModelSettings, trust: bool, presets: dict[str, Preset]) -> LoadedModel:
    try:
        if settings.init == "scratch":
            config = AutoConfig.from_pretrained(
                name, revision=settings.revision, local_files_only=not hub_reachable(), trust_remote_code=trust
            )
            model = _scratch(config, settings, trust)
        else:
            model = _pretrained(name, settings, trust)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise _needs_code(name) from None
        raise ConfigError(
            f"Unknown model '{name}': not a preset{did_you_mean(name, presets)} "
            f"(presets: {', '.join(presets)}), not a local folder, and loading it from the hub failed ({exc})."
        ) from None
    init = "scratch" if settings.init == "scratch" else "pretrained"
    tokenizer, tok_source = tokenizer_for(name, model, trust)
    return LoadedModel(model, tokenizer, f"{name} from the hub ({init})", init, tok_source)


def load_model(
    settings: ModelSettings, seed: int = 0, trust_remote_code: bool = False, registry: Registry | None = None
) -> LoadedModel:
    """Build or load the model ``settings`` names; random weights are drawn from ``seed``.

    ``trust_remote_code`` lets a model run its own code; only the caller's
    explicit choice sets it, never a setting read from a file. Preset names
    are looked up in ``registry`` (default: the installed plugins').
    """
    torch.manual_seed(seed)
    presets = (registry or get_registry()).presets
    if settings.name in presets:
        return _load_preset(presets[settings.name], settings, trust_remote_code)
    folder = Path(settings.name).expanduser()
    if folder.exists():
        return _load_folder(folder, settings, trust_remote_code, presets)
    return _load_hub(settings.name, settings, trust_remote_code, presets)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
