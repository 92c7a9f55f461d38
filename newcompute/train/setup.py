"""Everything a run needs before its first step, each choice recorded with its reason.

Order matters: the model is built and transformed first (its size decides
the budget and lr), then the plan, then the data (how much to read depends
on the plan), then LoRA, the accelerator, optimizer and schedule. The
resolved settings (every default filled in) are what the run records, so
``newcompute train --config RUN/newcompute.toml`` repeats it and
``--resume`` can refuse a command that would continue a different run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    AutocastKwargs,
    DistributedDataParallelKwargs,
    DistributedType,
    FullyShardedDataParallelPlugin,
    broadcast_object_list,
    parse_flag_from_env,
    set_seed,
)
from torch import nn
from transformers import PreTrainedTokenizerBase

from newcompute import run_files
from newcompute.composer import ComposeReport, apply, verify_attention
from newcompute.config import ParadigmUse, RunConfig, resolve_paradigms
from newcompute.errors import ConfigError
from newcompute.models import load_model, parameter_count
from newcompute.optim import build_optimizer
from newcompute.params import OptimizerSettings
from newcompute.plugins import Registry, get_registry
from newcompute.record import run_record, warn_version_changes
from newcompute.run_lock import RunLock
from newcompute.threads import available_cores, use_threads
from newcompute.train import checkpoint
from newcompute.train.blocks import PackedBlocks, TrainBlocks
from newcompute.train.budget import Mode, Plan, accumulation_steps, make_plan
from newcompute.train.graphs import GraphChoice, choose_cuda_graphs
from newcompute.train.loader import default_workers, pins_batches
from newcompute.train.packing import BlockOrder, pack, validation_period
from newcompute.train.runs import default_run_dir
from newcompute.train.schedule import build_scheduler, describe
from newcompute.train.trackers import checked_trackers
from newcompute.train.sources import TextSource, open_source
from newcompute.train.streaming import StreamedBlocks, read_head

SESSION_FIELDS = frozenset(
    {
        "eval_every",
        "eval_batches",
        "save_every",
        "keep_checkpoints",
        "report_to",
        "project",
        "run_name",
        "compile",
        "cuda_graphs",
        "threads",
        "divergence_factor",
        "divergence_patience",
        "strict",
    }
)
"""Train settings a resumed run may change: they do not alter what the run computes."""



@dataclass
class Session:
    run: RunConfig
    record: dict[str, Any]
    run_dir: Path
    plan: Plan
    accelerator: Accelerator
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: Any
    blocks: TrainBlocks
    validation: np.ndarray
    report: ComposeReport
    used: list[tuple[str, str]]
    resume_from: Path | None
    registry: Registry
    lock: RunLock | None
    notes: list[str]
    trust_remote_code: bool
    cuda_graphs: GraphChoice
    data_workers: int


def max_positions(model: nn.Module) -> int | None:
    config = model.config.get_text_config()
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def fsdp2_plugin(precision: str) -> FullyShardedDataParallelPlugin | None:
    """Under ``accelerate launch --use_fsdp``, accelerate's FSDP2 options with fp32 gradient reduction and outputs.

    accelerate's own bf16 policy also reduce-scatters gradients in bf16 and
    returns the loss rounded to bf16 (2^-8 relative), where DDP all-reduces
    fp32 gradients and reports an fp32 loss: the two would train and report
    differently for reasons that have nothing to do with sharding.
    Parameters are still gathered and computed with in the autocast dtype.
    """
    if not parse_flag_from_env("ACCELERATE_USE_FSDP") or precision == "no":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32, output_dtype=torch.float32)
    return FullyShardedDataParallelPlugin(mixed_precision_policy=policy)


def check_precision(choice: str, device: torch.device) -> None:
    """fp16 on a CPU is refused: accelerate then runs without autocast, so the run would compute in fp32."""
    if choice == "fp16" and device.type == "cpu":
        raise ConfigError(
            "train.mixed_precision 'fp16' (--precision fp16) needs a GPU: on the CPU accelerate does not autocast "
            "to fp16, so the run would compute in fp32. On the CPU choose 'bf16' (autocast to bfloat16), 'no' "
            "(fp32) or 'auto'."
        )


def precision_text(accelerator: Accelerator) -> str:
    """What the forward computes in: accelerate's choice only where it actually autocasts."""
    precision, device = accelerator.mixed_precision, accelerator.device
    if precision == "no":
        return f"fp32 on {device}"
    if not accelerator.native_amp:
        return f"fp32 on {device} ({precision} autocast is not available there)"
    return f"{precision} autocast on {device}"


def distribution_text(distributed_type: DistributedType, processes: int, fsdp_requested: bool) -> str:
    """How the processes share the work, saying so when ``--fsdp`` could not be honoured."""
    if distributed_type == DistributedType.FSDP:
        return f"FSDP2 over {processes} process{'es' if processes > 1 else ''}"
    if processes == 1:
        return "one process" + (" (--fsdp has nothing to shard over)" if fsdp_requested else "")
    text = f"DDP over {processes} processes"
    if fsdp_requested:
        text += ": accelerate runs FSDP2 on GPUs only, so --fsdp is not applied on this machine"
    return text


def _run_dir(run: RunConfig, uses: list[ParadigmUse]) -> Path:
    return Path(run.train.output_dir) if run.train.output_dir else default_run_dir(run, [u.name for u in uses])


@dataclass(frozen=True)
class FolderPlan:
    """What the run folder holds and what the run will do with it, decided before anything is touched."""

    resume_from: Path | None
    damaged: list[tuple[Path, str]]
    notes: list[str]


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> FolderPlan:
    """The checkpoint to resume from, after checking the folder holds what the flags expect.

    A user's files are never deleted or overwritten: a folder that holds files newcompute did not write is
    refused for a new run, and ``--overwrite`` deletes only what newcompute wrote (:mod:`newcompute.run_files`).
    """
    if resume:
        found, damaged = checkpoint.newest_intact(run_dir)
        problems = [f"Checkpoint {path.name} is damaged ({problem})" for path, problem in damaged]
        if found is None:
            what = "intact checkpoint" if damaged else "checkpoint"
            raise ConfigError(
                f"--resume: {run_dir} has no {what} to resume from (looked in {run_dir}/checkpoints)."
                + "".join(f" {problem}." for problem in problems)
            )
        notes = [f"{problem}: set aside." for problem in problems]
        if damaged:
            notes.append(f"Resuming from {found.name}, the newest intact checkpoint.")
        return FolderPlan(found, damaged, notes)
    theirs = run_files.foreign(run_dir)
    ours = run_files.holds_run(run_dir)
    if ours and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run. Pass --resume to continue it, --overwrite to start it again, "
            "or --output-dir for a new folder."
        )
    if theirs and not ours:
        what = "newcompute never writes over them"
        if overwrite:
            what = "--overwrite deletes only what newcompute wrote, and it wrote nothing here"
        raise ConfigError(
            f"{run_dir} is not a newcompute run folder: it holds files newcompute did not write "
            f"({run_files.describe(theirs)}); {what}. Choose an empty or new folder with --output-dir."
        )
    kept = [f"{run_dir} keeps {run_files.describe(theirs)}, which newcompute did not write."] if theirs else []
    return FolderPlan(None, [], kept)


def check_settings(
    run: RunConfig, registry: Registry, paradigms: list[str] | None, resume: bool, overwrite: bool, processes: int
) -> None:
    """What every process would refuse first (paradigms, run folder and its lock, batch split), checked once
    before a launch.

    Under ``accelerate launch`` each process refuses a bad setting itself: the error comes once per process,
    after the launch, and the launcher adds its own traceback and exit code 1.
    """
    uses = resolve_paradigms(registry, run, paradigms)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_precision(run.train.mixed_precision, device)
    precision = mixed_precision(run.train.mixed_precision)
    choose_cuda_graphs(run.train.cuda_graphs, device.type, processes, precision, [use.paradigm for use in uses])
    run_dir = _run_dir(run, uses)
    with RunLock(run_dir):
        _check_run_dir(run_dir, resume, overwrite)
    accumulation_steps(run.train.batch_size, run.train.micro_batch_size, processes)


def _ready_run_dir(run_dir: Path, folder: FolderPlan) -> None:
    """Once every setting checked out: clear what a previous run wrote (new run) or a broken write (resume)."""
    if folder.resume_from is not None:
        for path, _ in folder.damaged:
            checkpoint.set_aside(path)
        checkpoint.remove_temporary(run_dir)
    else:
        run_files.remove_owned(run_dir)
    run_files.compact(run_dir)


def _lock_run_dir(state: PartialState, run_dir: Path, notes: list[str]) -> RunLock | None:
    """The main process takes the folder's lock; every process raises the same error when it cannot."""
    lock = RunLock(run_dir) if state.is_main_process else None
    refusal: list[str | None] = [None]
    if lock is not None:
        try:
            lock.acquire(notes.append)
        except ConfigError as exc:
            refusal = [str(exc)]
    if state.num_processes > 1:
        broadcast_object_list(refusal)
    if refusal[0] is not None:
        raise ConfigError(refusal[0])
    return lock


def _mode(run: RunConfig, init: str) -> Mode:
    if run.train.lora:
        return "lora"
    return "scratch" if init == "scratch" else "fine-tune"


def _read_limit(run: RunConfig, plan: Plan, bounded: bool) -> int | None:
    """Tokens to read: all of a local source (or a stream, read as far as the run goes), else the budget plus
    what the validation rule can use."""
    if run.data.max_tokens is not None or bounded or run.data.streaming:
        return run.data.max_tokens
    validation = validation_period(run.data.validation_fraction) * run.data.validation_max_blocks * plan.block_size
    return plan.steps * plan.tokens_per_step + validation


def _resolved(run: RunConfig, plan: Plan, run_dir: Path, limit: int | None) -> RunConfig:
    resolved = run.model_copy(deep=True)
    train = resolved.train
    train.output_dir, train.block_size, train.steps, train.tokens = str(run_dir), plan.block_size, plan.steps, None
    train.lr, train.warmup_steps, train.eval_every = plan.lr, plan.warmup_steps, plan.eval_every
    train.threads = None  # a setting of the machine, not of the run: whoever reloads the run chooses their own
    resolved.data.data_workers = None  # likewise
    resolved.data.max_tokens = limit
    return resolved


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run record that a resumed run must share with its checkpoint."""
    kept = {k: v for k, v in record.items() if k != "record"}
    kept["train"] = {k: v for k, v in record.get("train", {}).items() if k not in SESSION_FIELDS and k != "output_dir"}
    kept["data"] = {k: v for k, v in record.get("data", {}).items() if k not in ("cache", "data_workers")}
    return kept


def _with_later_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before a setting existed ran as that setting's default does (a new setting's
    default keeps the old behaviour), so such a run resumes unless the command asks for something else."""
    defaults = RunConfig().model_dump(mode="json", exclude_none=True)
    filled = dict(saved)
    for table in ("model", "train", "data"):
        filled[table] = {**defaults[table], **saved.get(table, {})}
    return filled


def check_resumable(saved: dict[str, Any], now: dict[str, Any]) -> None:
    differences = _differences(comparable(_with_later_defaults(saved)), comparable(now))
    if differences:
        shown = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} now" for key, old, new in differences[:6])
        raise ConfigError(
            f"--resume continues the run as it was started, but these settings differ: {shown}. "
            "Repeat the original command with --resume, or start a new run with --output-dir."
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return found
    return [] if old == new else [(prefix, old, new)]


def build_session(
    run: RunConfig,
    registry: Registry | None = None,
    paradigms: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> Session:
    """Everything the run needs, holding the run folder's lock (released here if anything fails, else by
    the caller through ``session.lock``)."""
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    registry = registry or get_registry()
    uses = resolve_paradigms(registry, run, paradigms)
    run_dir = _run_dir(run, uses)
    notes: list[str] = []
    lock = _lock_run_dir(state, run_dir, notes)
    try:
        return _session(state, run, registry, uses, run_dir, resume, overwrite, trust_remote_code, lock, notes)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _session(
    state: PartialState,
    run: RunConfig,
    registry: Registry,
    uses: list[ParadigmUse],
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    trust_remote_code: bool,
    lock: RunLock | None,
    notes: list[str],
) -> Session:
    check_precision(run.train.mixed_precision, state.device)
    folder = _check_run_dir(run_dir, resume, overwrite)
    resume_from = folder.resume_from
    notes += folder.notes
    threads = use_threads(run.train.threads)
    used: list[tuple[str, str]] = []

    set_seed(run.train.seed)
    loaded = load_model(run.model, seed=run.train.seed, trust_remote_code=trust_remote_code, registry=registry)
    model = loaded.model
    if run.model.dtype == "auto" and next(model.parameters()).dtype != torch.float32:
        used.append(("Weights", f"upcast from {next(model.parameters()).dtype} to float32 for training"))
        model = model.float()
    report = apply(model, uses, registry=registry, strict=run.train.strict)
    model.eval()
    verify_attention(model)
    model.train()

    plan = make_plan(
        run.train, parameter_count(model), _mode(run, loaded.init), max_positions(model), state.num_processes
    )
    notes += plan.notes
    source = open_source(run.data, registry)
    limit = _read_limit(run, plan, source.bounded)
    with state.main_process_first():
        data = _training_data(source, loaded.tokenizer, plan.block_size, run, limit)

    resolved = _resolved(run, plan, run_dir, limit)
    if plan.mode == "lora":
        from newcompute.lora import add_lora

        model = add_lora(model, run.train)

    precision = mixed_precision(run.train.mixed_precision)
    paradigms = [use.paradigm for use in uses]
    graphs = choose_cuda_graphs(run.train.cuda_graphs, state.device.type, state.num_processes, precision, paradigms)
    accelerator = Accelerator(
        gradient_accumulation_steps=plan.accumulation,
        mixed_precision=precision,
        fsdp_plugin=fsdp2_plugin(precision),
        log_with=checked_trackers(run.train.report_to),
        project_dir=str(run_dir),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[
            DistributedDataParallelKwargs(gradient_as_bucket_view=True),
            AutocastKwargs(cache_enabled=False if graphs.enabled else None),
        ],
    )
    if plan.mode == "lora" and accelerator.distributed_type == DistributedType.FSDP:
        raise ConfigError(
            "--lora is not supported with FSDP yet: adapters are small, so run LoRA with DDP (drop --fsdp)."
        )
    model.to(accelerator.device)
    if run.train.compile:
        model.compile()
    optimizer = build_optimizer(
        model,
        OptimizerSettings(lr=plan.lr, weight_decay=run.train.weight_decay, betas=run.train.betas),
        registry=registry,
    )
    scheduler = build_scheduler(optimizer, run.train.schedule, plan.warmup_steps, plan.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    record = run_record(resolved, accelerator.unwrap_model(model))
    if resume_from is not None:
        saved = checkpoint.read_state(resume_from)["run"]
        check_resumable(saved, record)
        warn_version_changes(f"--resume from {resume_from}", saved.get("record", {}), report.uses)
    if accelerator.is_main_process:
        _ready_run_dir(run_dir, folder)
    accelerator.wait_for_everyone()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    used += _used_rows(loaded, resolved, plan, data, source.description, report, accelerator, trainable, graphs)
    used.append(("Threads", threads))
    workers = default_workers(run.data.data_workers, accelerator.device)
    chosen = run.data.data_workers is not None
    used.append(("Batches", _batches_text(workers, chosen, accelerator.device, graphs.enabled)))
    used.append(("Run folder", f"{run_dir}" + (f" (resuming from {resume_from.name})" if resume_from else "")))
    return Session(
        run=resolved,
        record=record,
        run_dir=run_dir,
        plan=plan,
        accelerator=accelerator,
        model=model,
        tokenizer=loaded.tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        blocks=data.blocks,
        validation=data.validation,
        report=report,
        used=used,
        resume_from=resume_from,
        registry=registry,
        lock=lock,
        notes=notes,
        trust_remote_code=trust_remote_code,
        cuda_graphs=graphs,
        data_workers=workers,
    )


def _batches_text(workers: int, chosen: bool, device: torch.device, cuda_graphs: bool) -> str:
    """The summary's line on the DataLoader, saying where its number of workers came from."""
    why = "--data-workers" if chosen else f"the default on {device.type}; --data-workers to change"
    pinned = ", pinned memory, copied without blocking" if pins_batches(device, cuda_graphs) else ""
    if device.type == "cuda" and not pinned:
        pinned = ", not pinned: a pinning thread would break CUDA graph capture"
    return f"torch DataLoader, {workers} worker process(es) ({why}){pinned}"


@dataclass(frozen=True)
class TrainingData:
    """The run's train samples, its validation blocks, and what the summary says about how they were made."""

    blocks: TrainBlocks
    validation: np.ndarray
    data_row: str
    blocks_row: str
    train_tokens: int | None


def _training_data(
    source: TextSource, tokenizer: PreTrainedTokenizerBase, block_size: int, run: RunConfig, limit: int | None
) -> TrainingData:
    """Packed blocks (tokenized on every core the run may use, or from the token cache), or a stream whose
    head is read now and the rest as the run goes (``--streaming``)."""
    if run.data.streaming:
        head = read_head(source, tokenizer, block_size, run.data)
        held = head.validation.shape[0]
        return TrainingData(
            StreamedBlocks(source, tokenizer, block_size, run.data, head),
            head.validation,
            "streamed: tokenized and packed as the run consumes it, in stream order"
            + (f", up to {limit:,} tokens a pass" if limit is not None else ""),
            f"{held:,} validation blocks (the head of the stream) of {block_size} tokens, then train blocks in "
            "stream order",
            None,
        )
    processes = run.train.threads or available_cores()
    corpus = pack(source, tokenizer, block_size, run.data, run.train.seed, limit, processes)
    read = "all of it" if corpus.exhausted else f"first {corpus.tokens_read:,} tokens"
    return TrainingData(
        PackedBlocks(corpus.blocks, BlockOrder(corpus.train_rows.size, run.train.seed), corpus.train_rows),
        corpus.validation,
        f"{read}, {corpus.documents:,} documents joined by {corpus.separator}; {corpus.tokenized}",
        f"{corpus.train_rows.size:,} train + {corpus.validation.shape[0]:,} validation of {block_size} tokens",
        corpus.train_tokens,
    )


_MODES = {
    "scratch": "training from scratch",
    "fine-tune": "full fine-tuning of the loaded weights (continual pretraining)",
    "lora": "LoRA adapters on top of the (paradigm) layers; base weights frozen",
}


def _used_rows(
    loaded: Any,
    run: RunConfig,
    plan: Plan,
    data: TrainingData,
    source: str,
    report: ComposeReport,
    accelerator: Accelerator,
    trainable: int,
    graphs: GraphChoice,
) -> list[tuple[str, str]]:
    passes = ""
    if data.train_tokens is not None:
        passes = f", {plan.tokens / max(1, data.train_tokens):.2f} passes over the train blocks"
    optimizer = report.optimizer_paradigm or f"AdamW (weight decay {run.train.weight_decay:g}, betas {run.train.betas})"
    mode = _MODES[plan.mode] + (f", rank {run.train.lora_rank}" if plan.mode == "lora" else "")
    return [
        ("Model", loaded.source),
        ("Tokenizer", loaded.tokenizer_source),
        ("Mode", mode),
        ("Paradigms", ", ".join(report.paradigms) or "none (baseline)"),
        ("Parameters", f"{plan.params:,} ({trainable:,} trainable)"),
        ("Data", f"{source}: {data.data_row}"),
        ("Blocks", f"{data.blocks_row} (block size: {plan.reasons['block_size']})"),
        ("Budget", f"{plan.tokens:,} tokens ({plan.reasons['tokens']}){passes}"),
        (
            "Steps",
            f"{plan.steps:,} ({plan.reasons['steps']}); batch {plan.batch_size} = micro-batch "
            f"{plan.micro_batch_size} × accumulation {plan.accumulation} × {plan.processes} process(es)",
        ),
        ("Learning rate", f"{plan.lr:.3g} ({plan.reasons['lr']})"),
        (
            "Schedule",
            f"{run.train.schedule}: "
            + describe(run.train.schedule, plan.warmup_steps, plan.reasons["warmup_steps"], plan.steps),
        ),
        ("Optimizer", optimizer),
        ("Precision", precision_text(accelerator)),
        (
            "Distributed",
            distribution_text(
                accelerator.distributed_type, accelerator.num_processes, parse_flag_from_env("ACCELERATE_USE_FSDP")
            ),
        ),
        ("Compile", "torch.compile" if run.train.compile else "off (--compile to enable)"),
        ("CUDA graphs", graphs.reason),
    ]
