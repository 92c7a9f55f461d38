"""``newcompute train``, ``newcompute eval`` and ``newcompute compare``.

Direct flags are turned into ``--set`` overrides, so a flag, a run file and
``--set`` all go through the same validation and error messages.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import typer
from rich.markup import escape
from rich.table import Table

from newcompute.cli.common import (
    ConfigOption,
    InitOption,
    ModelOption,
    ParadigmConfigOption,
    ParadigmOption,
    SetOption,
    StrictOption,
    TrustRemoteCodeOption,
    run_config,
    user_errors,
)
from newcompute.cli.render import console
from newcompute.errors import ConfigError

_FLAG_KEYS = {
    "dataset": "data.dataset",
    "dataset_config": "data.config_name",
    "split": "data.split",
    "text_column": "data.text_column",
    "streaming": "data.streaming",
    "max_tokens": "data.max_tokens",
    "steps": "train.steps",
    "tokens": "train.tokens",
    "batch_size": "train.batch_size",
    "micro_batch_size": "train.micro_batch_size",
    "block_size": "train.block_size",
    "lr": "train.lr",
    "warmup_steps": "train.warmup_steps",
    "seed": "train.seed",
    "eval_every": "train.eval_every",
    "save_every": "train.save_every",
    "output_dir": "train.output_dir",
    "compile": "train.compile",
    "cuda_graphs": "train.cuda_graphs",
    "lora": "train.lora",
    "lora_rank": "train.lora_rank",
    "report_to": "train.report_to",
    "precision": "train.mixed_precision",
    "strict": "train.strict",
}

DatasetOption = Annotated[
    str | None,
    typer.Option(
        help="'builtin:pydoc' (default: the text of Python's own pydoc_data.topics, shipped with every CPython, "
        "offline), a local .txt/.jsonl/.parquet file or folder, or a hub dataset id (needs 'datasets')."
    ),
]
DatasetConfigOption = Annotated[str | None, typer.Option(help="The hub dataset's configuration, e.g. sample-10BT.")]
SplitOption = Annotated[str | None, typer.Option(help="The dataset split to read (default train).")]
TextColumnOption = Annotated[str | None, typer.Option(help="The column or JSON key holding the text (default text).")]
BlockSizeOption = Annotated[
    int | None, typer.Option(help="Tokens per sequence; default 1024, or the model's context if shorter.")
]
MaxTokensOption = Annotated[int | None, typer.Option(help="Read at most this many tokens of the dataset.")]


def _overrides(values: dict[str, Any]) -> list[str]:
    """``--set`` strings for the flags that were given (booleans only when switched on)."""
    sets = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        literal = tomli_w.dumps({"v": value}).strip().removeprefix("v = ")
        sets.append(f"{_FLAG_KEYS[name]}={literal}")
    return sets


@user_errors
def train(
    model: ModelOption = None,
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
    init: InitOption = None,
    dataset: DatasetOption = None,
    dataset_config: DatasetConfigOption = None,
    split: SplitOption = None,
    text_column: TextColumnOption = None,
    streaming: Annotated[
        bool, typer.Option("--streaming", help="Stream a hub dataset instead of downloading it.")
    ] = False,
    max_tokens: MaxTokensOption = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: from the token budget).")] = None,
    tokens: Annotated[
        int | None, typer.Option(help="Token budget (default 22 × params / 100 fine-tuning, 22 × params scratch).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per optimizer step, all processes (16).")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="Sequences per forward on one device (4).")] = None,
    block_size: BlockSizeOption = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default: by model size, docs/training.md).")
    ] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Linear warm-up steps (default 5% of the steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of weights, data order and noise (0).")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N steps (a tenth of the run, ≤ 50).")] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps (200), and at the end.")] = None,
    output_dir: Annotated[
        str | None, typer.Option("--output-dir", "-o", help="The run folder (default runs/MODEL[-PARADIGM…]).")
    ] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs", help="Capture each micro-step as a CUDA graph and replay it (one GPU): no launch overhead."
        ),
    ] = False,
    lora: Annotated[
        bool, typer.Option("--lora", help="Train LoRA adapters (PEFT) on top of the paradigm layers.")
    ] = False,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (8).")] = None,
    report_to: Annotated[
        str | None, typer.Option(help="Also log to tensorboard, wandb or trackio (metrics.jsonl is always written).")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (bf16 autocast on GPU, fp32 on CPU), no, bf16 or fp16.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the output folder.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start again in an output folder that holds a run.")
    ] = False,
    num_processes: Annotated[
        int | None,
        typer.Option(min=1, help="Run on N processes through 'accelerate launch' (DDP, or FSDP2 with --fsdp)."),
    ] = None,
    fsdp: Annotated[
        bool, typer.Option("--fsdp", help="With --num-processes: shard with FSDP2 instead of DDP.")
    ] = False,
    trust_remote_code: TrustRemoteCodeOption = False,
    strict: StrictOption = False,
) -> None:
    """Train a model under the chosen paradigms: fine-tune (default with weights), --init scratch, or --lora.

    The default data is the built-in corpus, the text of Python's pydoc_data.topics, so a run works offline.
    """
    from newcompute.train.launch import inside_launcher, relaunch

    if fsdp and num_processes is None and not inside_launcher():
        raise ConfigError("--fsdp runs under accelerate launch: add --num-processes N (the GPUs to shard over).")
    flags = {
        "dataset": dataset,
        "dataset_config": dataset_config,
        "split": split,
        "text_column": text_column,
        "streaming": streaming,
        "max_tokens": max_tokens,
        "steps": steps,
        "tokens": tokens,
        "batch_size": batch_size,
        "micro_batch_size": micro_batch_size,
        "block_size": block_size,
        "lr": lr,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "eval_every": eval_every,
        "save_every": save_every,
        "output_dir": output_dir,
        "compile": compile_,
        "cuda_graphs": cuda_graphs,
        "lora": lora,
        "lora_rank": lora_rank,
        "report_to": report_to,
        "precision": precision,
        "strict": strict,
    }
    run = run_config(config, [*(set_ or []), *_overrides(flags)], model, init, paradigm_config)
    if not inside_launcher() and (fsdp or (num_processes or 1) > 1):
        from newcompute.plugins import get_registry
        from newcompute.train.setup import check_settings

        check_settings(run, get_registry(), paradigm, resume, overwrite, num_processes or 1)
        raise typer.Exit(relaunch(sys.argv[2:], num_processes or 1, fsdp))
    from newcompute.train import train as run_training

    result = run_training(
        run,
        paradigms=paradigm,
        resume=resume,
        overwrite=overwrite,
        console=console,
        trust_remote_code=trust_remote_code,
    )
    if result.status == "interrupted":
        raise typer.Exit(130)


@user_errors
def eval_(
    model: Annotated[str, typer.Argument(help="A run folder of 'newcompute train', or a model as for --model.")],
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
    init: InitOption = None,
    dataset: DatasetOption = None,
    block_size: BlockSizeOption = None,
    max_tokens: MaxTokensOption = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Sequences per forward (default: the run's micro-batch).")
    ] = None,
    max_blocks: Annotated[int | None, typer.Option(help="Score only the first N validation blocks.")] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated lm-eval-harness tasks to run too (needs lm-eval).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="With --tasks: at most N examples per task.")] = None,
    trust_remote_code: TrustRemoteCodeOption = False,
) -> None:
    """Validation loss and perplexity of a run folder (rebuilt exactly) or of a model under paradigms.

    For a run folder the default data, block size and split are the run's own, so it reports the loss the run
    reported at its end.
    """
    from newcompute.evaluate import run_lm_eval
    from newcompute.train.evaluation import evaluate_model, load_model_for_eval, load_run_for_eval
    from newcompute.train.runs import is_run_dir

    folder = Path(model).expanduser()
    data_sets = [*(set_ or []), *_overrides({"dataset": dataset, "block_size": block_size, "max_tokens": max_tokens})]
    if is_run_dir(folder):
        if paradigm or paradigm_config or init:
            raise ConfigError(
                f"{folder} is a saved run: its paradigms and weights are recorded in newcompute.toml. "
                "Drop --paradigm/--paradigm-config/--init, or evaluate the base model by name instead."
            )
        target = load_run_for_eval(folder, data_sets, trust_remote_code=trust_remote_code)
    else:
        run = run_config(config, data_sets, model, init, paradigm_config)
        target = load_model_for_eval(run, paradigm, trust_remote_code=trust_remote_code)
    for key, value in target.used:
        console.print(f"[bold]{key}:[/] {escape(str(value))}", highlight=False)
    result = evaluate_model(target, batch_size=batch_size, max_blocks=max_blocks)
    console.print(
        f"Validation loss {result.loss:.4f}, perplexity {result.perplexity:.2f} "
        f"({result.blocks} blocks, {result.tokens:,} predicted tokens)",
        highlight=False,
    )
    if tasks:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        scores = run_lm_eval(target.model, target.tokenizer, names, batch_size or 8, limit)
        console.print(_task_table(scores))


def _task_table(scores: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="lm-eval-harness")
    for column in ("task", "metric", "value"):
        table.add_column(column)
    for task, metrics in scores.items():
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and metric != "alias":
                table.add_row(task, metric, f"{value:.4f}")
    return table


@user_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by 'newcompute train'.")],
    plot: Annotated[Path, typer.Option(help="Where to write the PNG of the loss curves.")] = Path("compare.png"),
) -> None:
    """Compare runs: final/best validation loss, tokens/s, peak memory, and a PNG of their loss curves."""
    from newcompute.compare import comparison_table, plot_curves, summarize

    runs = [r.expanduser() for r in runs]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise ConfigError(f"Not a folder: {', '.join(missing)}. Pass run folders written by 'newcompute train'.")
    summaries = [summarize(r, lambda note: console.print(note, highlight=False, markup=False)) for r in runs]
    console.print(comparison_table(summaries))
    console.print(f"Loss curves: {plot_curves(summaries, plot.expanduser())}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``eval`` and ``compare`` to the app."""
    app.command()(train)
    app.command("eval")(eval_)
    app.command()(compare)
