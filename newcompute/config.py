"""Run configuration: one TOML file, ``NEWCOMPUTE_…`` variables, CLI flags and ``--set`` overrides.

A run file has ``[model]``, ``[train]``, ``[data]`` and one
``[paradigm.NAME]`` table per paradigm (in the order they apply). Paradigm
tables are validated against the config model the plugin registered, plus
the core's ``include``/``exclude`` rules. Unknown keys are errors with a
did-you-mean, never ignored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from newcompute import newcomputebench
from newcompute.culprit import Culprit, describe
from newcompute.errors import ConfigError, NewcomputeError, PluginError, RunError
from newcompute.paradigm import Paradigm, StrictConfig
from newcompute.plugins import Registry, did_you_mean
from newcompute.rules import Rules

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class Strict(StrictConfig):
    """Run settings: unknown keys are errors (as in a paradigm config, but not frozen: the trainer fills in
    resolved values), and no number may be ``inf`` or ``nan``: a learning rate of ``inf`` trains nothing but
    NaNs, and every bound below (``gt=0``…) holds for ``inf`` too."""

    model_config = ConfigDict(frozen=False, validate_assignment=True, allow_inf_nan=False)


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
"""An Adam moment decay: 0 forgets at once, 1 would never forget (and divides by zero in the bias correction)."""

UserPath = Annotated[str, AfterValidator(os.path.expanduser)]
"""A path as a user types it: ``~`` means their home, in a file and in ``--set`` as in a shell."""


ALL_COMMANDS = ("train", "eval", "transform", "inspect", "sensitivity")
MEASURING = ("inspect", "sensitivity")
"""The commands that run a few batches through a model to measure it (``newcompute inspect``, ``sensitivity``)."""

Tracker = Literal["tensorboard", "wandb", "trackio", "mlflow"]
"""The experiment trackers ``--report-to`` may name, each through accelerate's tracker of that name."""


def _tracker_list(value: Any) -> Any:
    """Trackers as a list without repeats: ``"a,b"`` and ``"none"`` (one tracker or none, as records written
    before several trackers were allowed hold it) are read as lists too."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        names = [v.strip() if isinstance(v, str) else v for v in value]
        return list(dict.fromkeys(v for v in names if v not in ("none", "")))
    return value


def flag(
    name: str | None = None, short: str | None = None, commands: tuple[str, ...] = ("train",)
) -> dict[str, Any]:
    """A field's command-line flag, for ``json_schema_extra`` (read by :mod:`newcompute.cli.flags`).

    Without it, a field that has a ``description`` is the flag ``--field-name``
    on ``train`` with the description as its help; this renames the flag, adds
    a short form, or puts it on other commands.
    """
    return {"cli": {"name": name, "short": short, "commands": commands}}


NO_FLAG: dict[str, Any] = {"cli": None}
"""``json_schema_extra`` of a described field that stays out of the command line (``--set`` still reaches it)."""


class ModelSettings(Strict):
    name: str = Field(
        "tiny",
        description="A preset (see 'newcompute presets'), a hub id or a local folder.",
        json_schema_extra=flag("--model", "-m", commands=("train", "transform", *MEASURING)),
    )
    init: Literal["auto", "pretrained", "scratch"] = Field(
        "auto",
        description="'scratch' builds from the config with random weights; 'auto' loads weights when they exist.",
        json_schema_extra=flag(commands=ALL_COMMANDS),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _remote_code_is_not_a_setting(cls, data: Any) -> Any:
        """A model's own code runs only when the person at the command line asks (--trust-remote-code), never
        because a file says so: a downloaded run folder's newcompute.toml could otherwise run its code unasked.
        Records written before this rule hold ``trust_remote_code = false``, which is read as nothing."""
        if isinstance(data, dict) and "trust_remote_code" in data:
            if data["trust_remote_code"] is not False:
                raise ValueError(
                    "trust_remote_code is not read from files or --set: pass --trust-remote-code on the command "
                    "line (trust_remote_code=True from Python) to run a model's own code"
                )
            data = {k: v for k, v in data.items() if k != "trust_remote_code"}
        return data


class DataSettings(Strict):
    dataset: UserPath = Field(
        "builtin:pydoc",
        description="'builtin:pydoc' (the text of Python's pydoc_data.topics, offline), a local "
        ".txt/.jsonl/.parquet file, a .bin/.npy token file, a folder of them, a hub dataset id (needs "
        "'datasets'), or a scheme or suffix a plugin's data source reads (see 'newcompute data-sources').",
        json_schema_extra=flag(commands=("train", "eval", *MEASURING)),
    )
    config_name: str | None = Field(
        None,
        description="The hub dataset's configuration, e.g. 'sample-10BT'.",
        json_schema_extra=flag("--dataset-config"),
    )
    split: str = Field("train", description="The dataset split to read.")
    text_column: str = Field("text", description="The column or JSON key holding the text.")
    streaming: bool = Field(False, description="Stream a hub dataset instead of downloading it.")
    cache: bool = Field(
        True,
        description="Keep the tokens of local files and the built-in corpus in the token cache "
        "($NEWCOMPUTE_CACHE/tokens, default ~/.cache/newcompute/tokens), so a second run starts at once.",
    )
    token_dtype: Literal["uint16", "uint32"] = Field(
        "uint16", description="Width of the token ids in raw .bin token files (nanoGPT writes uint16)."
    )
    validation_fraction: float = Field(
        0.05, gt=0.0, le=0.5, description="Share of blocks held out: every round(1/fraction)-th block."
    )
    validation_max_blocks: int = Field(256, gt=0, description="At most this many validation blocks.")
    max_tokens: int | None = Field(
        None,
        gt=0,
        description="Stop reading the source after this many tokens.",
        json_schema_extra=flag(commands=("train", "eval")),
    )


class TrainSettings(Strict):
    output_dir: UserPath | None = Field(
        None, description="The run folder; default runs/MODEL[-PARADIGM…].", json_schema_extra=flag(short="-o")
    )
    steps: int | None = Field(None, gt=0, description="Optimizer steps; default from the token budget.")
    tokens: int | None = Field(
        None, gt=0, description="Token budget; default 22 × params / 100 (fine-tuning), 22 × params (scratch)."
    )
    batch_size: int = Field(16, gt=0, description="Sequences per optimizer step, across processes.")
    micro_batch_size: int = Field(4, gt=0, description="Sequences per forward on one device.")
    block_size: int | None = Field(
        None,
        gt=1,
        description="Tokens per sequence; default 1024, or the model's context if shorter.",
        json_schema_extra=flag(commands=("train", "eval", *MEASURING)),
    )
    lr: float | None = Field(
        None, gt=0.0, description="Peak learning rate; default from the model-size table in docs/training.md."
    )
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[Beta, Beta] = Field((0.9, 0.95), description="AdamW's moment decays, each in [0, 1).")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warm-up steps; default 5% of the steps.")
    schedule: Literal["linear", "cosine", "constant", "wsd"] = Field(
        "linear",
        description="Learning rate after the warm-up: linear or half-cosine decay to 0, constant, or wsd "
        "(warmup-stable-decay: constant, then decay over the last 20% of the steps).",
    )
    grad_clip: float | None = Field(1.0, gt=0.0)
    seed: int = Field(
        0,
        ge=0,
        description="Seed of the weights, the data order and the noise.",
        json_schema_extra=flag(commands=("train", *MEASURING)),
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="'auto': bf16 autocast on a GPU that supports it, fp32 otherwise.",
        json_schema_extra=flag("--precision", commands=("train", *MEASURING)),
    )
    eval_every: int | None = Field(
        None, gt=0, description="Validate every N steps; default a tenth of the run, ≤ 50."
    )
    eval_batches: int = Field(8, gt=0, description="Micro-batches in a periodic evaluation; the final one uses all.")
    save_every: int = Field(200, gt=0, description="Checkpoint every N steps, and at the end.")
    keep_checkpoints: int = Field(2, gt=0, description="Checkpoints kept in RUN/checkpoints (newest first).")
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads torch computes with; default: the cores this process may use.",
        json_schema_extra=flag(commands=ALL_COMMANDS),
    )
    compile: bool = Field(False, description="torch.compile the model.")
    cuda_graphs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Replay each micro-step as a captured CUDA graph. 'auto': on one CUDA GPU when every "
        "paradigm declares it can be captured; the run summary says what was chosen and why.",
    )
    telemetry_every: int | None = Field(
        None,
        gt=0,
        description="Every N steps, log each layer's paradigm statistics to metrics.jsonl (kind 'telemetry') "
        "and the trackers; off by default, and then nothing extra runs.",
    )
    telemetry_error: bool = Field(
        False,
        description="With --telemetry-every, also measure each product's error against the exact one (relative "
        "error, SNR, cosine) on the measured steps; off by default.",
    )
    telemetry_stride: int = Field(
        16,
        ge=1,
        description="On a --telemetry-every step, paradigms measure activations and gradients on every N-th token "
        "row (weights whole); 1 measures every row. `newcompute inspect` always measures every row.",
    )

    @model_validator(mode="after")
    def _error_needs_measured_steps(self) -> TrainSettings:
        """The error probe runs on the steps ``telemetry_every`` measures; alone it would measure nothing."""
        if self.telemetry_error and self.telemetry_every is None:
            raise ValueError("telemetry_error needs telemetry_every (e.g. --telemetry-every 10 --telemetry-error)")
        return self
    lora: bool = Field(False, description="Train LoRA adapters (PEFT) on top of the paradigm layers.")
    lora_rank: int = Field(8, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(16.0, gt=0.0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    report_to: Annotated[list[Tracker], BeforeValidator(_tracker_list)] = Field(
        default_factory=list,
        description="Also log to these trackers, comma-separated: any of tensorboard, wandb, trackio, mlflow "
        "(metrics.jsonl is always written).",
    )
    project: str = Field(
        "newcompute",
        min_length=1,
        description="The trackers' project (wandb, trackio), experiment (mlflow) or folder in the run (tensorboard).",
    )
    run_name: str | None = Field(
        None, min_length=1, description="The run's name in the trackers; default the run folder's name."
    )
    divergence_factor: float = Field(
        2.0,
        gt=1.0,
        description="Stop when the loss stays above this factor × its running minimum for divergence_patience steps.",
    )
    divergence_patience: int = Field(
        20, gt=0, description="Steps in a row the loss may stay above divergence_factor × its minimum before a stop."
    )
    strict: bool = Field(
        False,
        description="A paradigm whose rules match no module (or that changes none) is an error (exit 2), "
        "not a warning.",
        json_schema_extra=flag(commands=("train", "transform")),
    )


    @field_validator("cuda_graphs", mode="before")
    @classmethod
    def _graphs_from_a_boolean(cls, value: Any) -> Any:
        """Run records written before 'auto' existed hold ``true`` or ``false``: they mean 'on' and 'off'."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class RunConfig(Strict):
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    data: DataSettings = DataSettings()
    paradigm: dict[str, dict[str, Any]] = Field(default_factory=dict)
    record: dict[str, Any] = Field(
        default_factory=dict,
        description="Provenance written by newcompute when it saves a run (versions of newcompute and of each "
        "paradigm's plugin); read back only to warn when they changed.",
    )


@dataclass(frozen=True)
class ParadigmUse:
    """One paradigm as applied: its declaration, validated config and module rules."""

    paradigm: Paradigm
    config: BaseModel
    rules: Rules

    @property
    def name(self) -> str:
        return self.paradigm.name

    def to_table(self) -> dict[str, Any]:
        """The config as a TOML table that validates back to the same config.

        TOML has no null, so ``None`` values are left out; that is exact only
        when the field's default is ``None`` too, which is checked here rather
        than discovered when the run is reloaded.
        """
        table = self.config.model_dump(mode="json", exclude_none=True)
        if self.paradigm.config.model_validate(table) != self.config:
            raise RunError(
                f"Paradigm '{self.name}': its config cannot be written to TOML exactly; a field set to None "
                "has a default that is not None. Set it to a value instead."
            )
        return {**table, **self.rules.to_table()}


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``path``."""
    current: type[BaseModel] | None = model
    for key in path[:-1]:
        if current is None or not isinstance(key, str) or key not in current.model_fields:
            return None
        annotation = current.model_fields[key].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return current


def format_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> ConfigError:
    """Turn pydantic's error into one paragraph naming each field and what is valid."""
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            fields = list(owner.model_fields) if owner else []
            hint = did_you_mean(str(loc[-1]), fields)
            valid = f" Valid keys: {', '.join(fields)}." if fields else ""
            lines.append(f"unknown key '{dotted}'.{hint}{valid}")
        else:
            lines.append(f"'{dotted}': {err['msg']} (got {err.get('input')!r})")
    return ConfigError(f"Invalid configuration in {where}: " + " ".join(lines))


def read_toml(path: Path) -> dict[str, Any]:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist (expected a TOML file).")
    raw = path.read_bytes()
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"Config file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}) "
            "cannot be read as UTF-8. Save the file as UTF-8, which TOML requires."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value``; the value is read as TOML (``128``, ``true``, ``["*.mlp.*"]``) or else as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set paradigm.optical.fc.q_levels=128")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is a value, not a table")
            node = child
        node[path[-1]] = value


ENV_PREFIX = "NEWCOMPUTE_"
ENV_SEPARATOR = "__"


def environment_overrides(environ: Mapping[str, str]) -> list[str]:
    """``--set``-style overrides from ``NEWCOMPUTE_TABLE__KEY=value`` variables, in name order.

    A cluster job or a container sets defaults for every run this way
    without a file (``NEWCOMPUTE_TRAIN__LR=3e-4``,
    ``NEWCOMPUTE_PARADIGM__OPTICAL__FC__Q_LEVELS=128``). Only names holding
    the ``__`` separator are settings, so ``NEWCOMPUTE_DEBUG`` and
    ``NEWCOMPUTE_PLUGINS`` keep their own meaning. A key the run config
    does not have is refused naming the variable, since a typo here would
    otherwise go unnoticed in every run.
    """
    overrides = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        path = name[len(ENV_PREFIX):].lower().split(ENV_SEPARATOR)
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key between '{ENV_SEPARATOR}' separators")
        nested: dict[str, Any] = {}
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = environ[name]
        unknown = _unknown_keys(RunConfig, nested)
        if unknown:
            raise ConfigError(f"environment variable {name}: " + " ".join(unknown))
        overrides.append(f"{'.'.join(path)}={environ[name]}")
    return overrides


def load_run_config(
    path: Path | None = None,
    overrides: list[str] | None = None,
    paradigm_files: dict[str, Path] | None = None,
) -> RunConfig:
    """Read a run file (optional), replace paradigm tables from their own files, apply ``--set``, validate.

    ``paradigm_files`` lets a paradigm's table come from a file of its own,
    such as NewComputeBench's ``transform_cfg.toml``, unchanged and with
    NewComputeBench's behaviour (:mod:`newcompute.newcomputebench`).
    """
    data = read_toml(path) if path else {}
    if path:
        newcomputebench.refuse_as_run_file(path, data)
    for name, file in (paradigm_files or {}).items():
        table = read_toml(file)
        if newcomputebench.is_transform_cfg(table):
            table = newcomputebench.newcomputebench_table(table)
            train = data.setdefault("train", {})
            for key, value in newcomputebench.lora_settings(table).items():
                train.setdefault(key, value)
        data.setdefault("paradigm", {})[name] = table
    apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, RunConfig, str(path) if path else "the command line") from None


def _unknown_keys(model: type[BaseModel], table: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys a config model does not define, at any depth.

    Checked by the core so a typo is an error even when a plugin's config
    model leaves pydantic's default of ignoring extra keys.
    """
    problems = []
    for key, value in table.items():
        field = model.model_fields.get(key)
        if field is None:
            hint = did_you_mean(key, model.model_fields)
            problems.append(f"unknown key '{prefix}{key}'.{hint} Valid keys: {', '.join(model.model_fields)}.")
            continue
        annotation = field.annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            problems.extend(_unknown_keys(annotation, value, f"{prefix}{key}."))
    return problems


def resolve_paradigm(registry: Registry, name: str, table: dict[str, Any]) -> ParadigmUse:
    """Validate one ``[paradigm.NAME]`` table (config fields plus ``include``/``exclude``) into a ParadigmUse.

    The way to configure a paradigm from code: ``apply(model,
    [resolve_paradigm(registry, "optical", {"fc": {"q_levels": 128}})])``.
    """
    paradigm = registry.get(name)
    options = dict(table)
    rules = Rules.from_table(options, where=f"paradigm.{name}")
    unknown = _unknown_keys(paradigm.config, options)
    if unknown:
        raise ConfigError(f"Invalid configuration in [paradigm.{name}]: " + " ".join(unknown))
    try:
        config = paradigm.config.model_validate(options)
    except ValidationError as exc:
        raise format_validation_error(exc, paradigm.config, f"[paradigm.{name}]") from None
    except NewcomputeError:
        raise
    except Exception as exc:  # a validator that crashes instead of refusing is the plugin's bug
        culprit = Culprit(paradigm.plugin, paradigm.version, name, f"validating {paradigm.config.__name__}")
        raise PluginError(describe(culprit, exc)) from exc
    return ParadigmUse(paradigm, config, rules)


def resolve_paradigms(registry: Registry, run: RunConfig, selected: list[str] | None = None) -> list[ParadigmUse]:
    """The paradigms to apply: ``selected`` (CLI ``--paradigm``) or else the file's tables, in order."""
    names = selected if selected else list(run.paradigm)
    if len(set(names)) != len(names):
        raise ConfigError(f"Paradigm listed twice: {names}. Name each paradigm once.")
    return [resolve_paradigm(registry, name, run.paradigm.get(name, {})) for name in names]
