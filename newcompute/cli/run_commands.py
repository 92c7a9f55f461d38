"""``newcompute train``, ``newcompute eval`` and ``newcompute compare``.

The config flags (``--steps``, ``--dataset``…) come from the config models
(:mod:`newcompute.cli.flags`); they reach the command as ``--set`` overrides, so
a flag, a run file and ``--set`` all go through the same validation and errors.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from newcompute.cli.common import (
    ConfigOption,
    ParadigmConfigOption,
    ParadigmOption,
    SetOption,
    TrustRemoteCodeOption,
    run_config,
    user_errors,
)
from newcompute.cli.flags import override, with_config_flags
from newcompute.cli.render import console
from newcompute.cli.study_commands import FormatOption, OutputOption, XOption, check_format, emit, note
from newcompute.errors import ConfigError


@user_errors
@with_config_flags("train")
def train(
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
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
    *,
    flags: list[str],
) -> None:
    """Train a model under the chosen paradigms: fine-tune (default with weights), --init scratch, or --lora.

    The default data is the built-in corpus, the text of Python's pydoc_data.topics, so a run works offline.
    """
    from newcompute.train.launch import inside_launcher, relaunch

    if fsdp and num_processes is None and not inside_launcher():
        raise ConfigError("--fsdp runs under accelerate launch: add --num-processes N (the GPUs to shard over).")
    run = run_config(config, set_, flags, paradigm_config)
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
@with_config_flags("eval")
def eval_(
    model: Annotated[str, typer.Argument(help="A run folder of 'newcompute train', or a model as for --model.")],
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Sequences per forward (default: the run's micro-batch).")
    ] = None,
    max_blocks: Annotated[int | None, typer.Option(help="Score only the first N validation blocks.")] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated lm-eval-harness tasks to run too (needs lm-eval): registry names or local task "
            "YAML files. Scores of a run folder are saved in it (lm_eval.json)."
        ),
    ] = None,
    include_path: Annotated[
        list[Path] | None, typer.Option("--include-path", help="With --tasks: a folder of local task YAML files.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="With --tasks: at most N examples per task.")] = None,
    trust_remote_code: TrustRemoteCodeOption = False,
    *,
    flags: list[str],
) -> None:
    """Validation loss and perplexity of a run folder (rebuilt exactly) or of a model under paradigms.

    For a run folder the default data, block size and split are the run's own, so it reports the loss the run
    reported at its end.
    """
    from newcompute.evaluate import run_lm_eval
    from newcompute.lm_tasks import check_reachable, select_tasks
    from newcompute.models import hub_reachable
    from newcompute.threads import use_threads
    from newcompute.train.evaluation import evaluate_model, load_model_for_eval, load_run_for_eval, save_lm_eval
    from newcompute.train.runs import is_run_dir

    selection = None
    if tasks:
        selection = select_tasks([t.strip() for t in tasks.split(",") if t.strip()], include_path)
        check_reachable(selection, not selection.registry or hub_reachable())
    folder = Path(model).expanduser()
    if is_run_dir(folder):
        if paradigm or paradigm_config or any(flag.startswith("model.init=") for flag in flags):
            raise ConfigError(
                f"{folder} is a saved run: its paradigms and weights are recorded in newcompute.toml. "
                "Drop --paradigm/--paradigm-config/--init, or evaluate the base model by name instead."
            )
        target = load_run_for_eval(folder, [*(set_ or []), *flags], trust_remote_code=trust_remote_code)
    else:
        run = run_config(config, [*(set_ or []), override("model.name", model)], flags, paradigm_config)
        target = load_model_for_eval(run, paradigm, trust_remote_code=trust_remote_code)
    threads = use_threads(target.run.train.threads)
    for key, value in [*target.used, ("Threads", threads)]:
        console.print(f"[bold]{key}:[/] {escape(str(value))}", highlight=False)
    result = evaluate_model(target, batch_size=batch_size, max_blocks=max_blocks)
    console.print(
        f"Validation loss {result.loss:.4f}, perplexity {result.perplexity:.2f} "
        f"({result.blocks} blocks, {result.tokens:,} predicted tokens)",
        highlight=False,
    )
    if selection is not None:
        scores = run_lm_eval(
            target.model,
            target.tokenizer,
            selection.names,
            batch_size or 8,
            limit,
            selection.include_paths,
            registry_tasks=bool(selection.registry),
        )
        console.print(_task_table(scores))
        if is_run_dir(folder):
            console.print(f"Scores saved in {save_lm_eval(folder, scores)}", highlight=False)


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
    fmt: FormatOption = "table",
    output: OutputOption = None,
    baseline: Annotated[
        str | None, typer.Option(help="The run (its folder name) the Δ column is measured against.")
    ] = None,
    x: XOption = "tokens",
    statistic: Annotated[
        str | None, typer.Option(help="Also plot this telemetry statistic (runs trained with --telemetry-every).")
    ] = None,
    layer: Annotated[str, typer.Option(help="With --statistic: the layer, or a glob of layers, to plot.")] = "*",
    statistic_plot: Annotated[
        Path, typer.Option(help="With --statistic: where to write its PNG.")
    ] = Path("compare-statistic.png"),
) -> None:
    """Compare runs: final (full-set) and best periodic validation loss, Δ vs a baseline, tokens/s, peak memory,
    cost estimates and lm-eval scores; --format md/csv/json exports them. Writes a PNG of the loss curves (and
    of a telemetry statistic with --statistic)."""
    from newcompute.study.plots import plot_curves
    from newcompute.study.results import run_results
    from newcompute.train.compare import plot_statistic, summarize

    check_format(fmt)
    runs = [r.expanduser() for r in runs]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise ConfigError(f"Not a folder: {', '.join(missing)}. Pass run folders written by 'newcompute train'.")
    emit(run_results(runs, baseline, note), fmt, output, "Runs compared")
    summaries = [summarize(r) for r in runs]
    written = f"Loss curves: {plot_curves(summaries, plot.expanduser(), x)}"
    if fmt == "table" or output is not None:
        console.print(written, highlight=False)
    else:
        typer.echo(written, err=True)  # stdout holds the export
    if statistic is not None:
        drawn = plot_statistic(runs, statistic, layer, statistic_plot.expanduser())
        console.print(f"{statistic} of {layer}: {drawn}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``eval`` and ``compare`` to the app."""
    app.command()(train)
    app.command("eval")(eval_)
    app.command()(compare)
