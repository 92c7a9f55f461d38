"""``newcompute inspect`` and ``newcompute sensitivity``: where a paradigm hurts, layer by layer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from newcompute.cli.common import (
    ConfigOption,
    ParadigmConfigOption,
    ParadigmOption,
    SetOption,
    TrustRemoteCodeOption,
    run_config,
    user_errors,
)
from newcompute.cli.flags import with_config_flags
from newcompute.cli.render import console
from newcompute.errors import ConfigError

InspectFormat = Literal["table", "json", "csv"]
UnitKind = Literal["layer", "block"]


@user_errors
@with_config_flags("inspect")
def inspect(
    run: Annotated[
        Path | None, typer.Argument(help="A run folder of 'newcompute train'; or leave it out and give --model.")
    ] = None,
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
    batches: Annotated[int, typer.Option(min=1, help="Micro-batches of validation blocks to run.")] = 4,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Sequences per forward (default: the run's micro-batch).")
    ] = None,
    format_: Annotated[
        InspectFormat, typer.Option("--format", help="table (rich), or json / csv (schema in docs/telemetry.md).")
    ] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the json or csv here instead of to stdout.")] = None,
    heatmap: Annotated[Path | None, typer.Option(help="Also write a layers × statistics heatmap PNG here.")] = None,
    statistic: Annotated[
        list[str] | None, typer.Option("--statistic", "-s", help="A statistic column of the table (repeatable).")
    ] = None,
    trust_remote_code: TrustRemoteCodeOption = False,
    *,
    flags: list[str],
) -> None:
    """Per-layer error against exact arithmetic (relative error, SNR, cosine) and each paradigm's statistics.

    Runs a few batches of the run's validation data (or, with --model, of the default corpus) once, measuring
    every replaced layer and attention product; the model and its state are left as they were.
    """
    from newcompute.composer import report_of
    from newcompute.telemetry import render
    from newcompute.telemetry.inspect import inspect_model
    from newcompute.threads import use_threads
    from newcompute.train.evaluation import load_model_for_eval, load_run_for_eval
    from newcompute.train.runs import is_run_dir

    given_model = any(flag.startswith("model.name=") for flag in flags)
    if run is not None:
        folder = run.expanduser()
        if not is_run_dir(folder):
            raise ConfigError(
                f"{folder} is not a run folder of 'newcompute train'. To inspect a model by name, "
                "use --model NAME --paradigm P instead of an argument."
            )
        if given_model or paradigm or paradigm_config:
            raise ConfigError(
                f"{folder} is a saved run: its model and paradigms are recorded in newcompute.toml. "
                "Drop --model/--paradigm/--paradigm-config, or inspect a model by name without the run folder."
            )
        target = load_run_for_eval(folder, [*(set_ or []), *flags], trust_remote_code=trust_remote_code)
    else:
        target = load_model_for_eval(
            run_config(config, set_, flags, paradigm_config), paradigm, trust_remote_code=trust_remote_code
        )
    threads = use_threads(target.run.train.threads)
    micro = batch_size or target.run.train.micro_batch_size
    blocks = target.corpus.validation[: batches * micro]
    report = inspect_model(target.model, blocks, micro, target.accelerator, seed=target.run.train.seed)
    columns = render.chosen_columns(report, statistic)
    if format_ == "table":
        for key, value in [*target.used, ("Threads", threads)]:
            console.print(f"[bold]{key}:[/] {escape(str(value))}", highlight=False)
        title = f"Per-layer error and statistics ({report.batches} batches, {report.tokens:,} predicted tokens)"
        console.print(render.inspect_table(report, columns, title))
        console.print(f"Loss {report.loss:.4f} on these batches.", highlight=False)
        hidden = len(report.statistic_names()) - len(columns)
        if hidden > 0 and not statistic:
            console.print(
                f"{hidden} more statistics in --format json/csv; choose table columns with --statistic NAME.",
                highlight=False,
            )
    else:
        composed = report_of(target.model)
        context = {"model": target.run.model.name, "paradigms": composed.paradigms if composed else []}
        text = render.to_json(report, context) if format_ == "json" else render.to_csv(report)
        if output is None:
            sys.stdout.write(text)
        else:
            output.expanduser().parent.mkdir(parents=True, exist_ok=True)
            output.expanduser().write_text(text, encoding="utf-8")
            console.print(f"Wrote {output.expanduser()}", highlight=False, markup=False)
    if heatmap is not None:
        path = render.heatmap(report, heatmap.expanduser(), columns if statistic else None)
        message = f"Heatmap: {path}"
        if format_ == "table" or output is not None:
            console.print(message, highlight=False, markup=False)
        else:
            print(message, file=sys.stderr)


@user_errors
@with_config_flags("sensitivity")
def sensitivity(
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
    budget: Annotated[
        float, typer.Option(min=0.0, help="Loss the plan may add to the exact model's, in nats per token.")
    ] = 0.02,
    batches: Annotated[int, typer.Option(min=1, help="Micro-batches of validation blocks each loss is taken on.")] = 4,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Sequences per forward (default: the run config's micro-batch).")
    ] = None,
    unit: Annotated[
        UnitKind, typer.Option(help="layer: each replaced layer and attention module; block: each transformer block.")
    ] = "layer",
    toml: Annotated[Path, typer.Option(help="Where to write the run TOML of the plan.")] = Path("sensitivity.toml"),
    plot: Annotated[Path, typer.Option(help="Where to write the PNG of the loss changes.")] = Path("sensitivity.png"),
    trust_remote_code: TrustRemoteCodeOption = False,
    *,
    flags: list[str],
) -> None:
    """Loss change with the paradigm on one layer alone and removed from one layer alone; a plan within a budget.

    Ranks the layers (or blocks), draws both changes, and writes a run TOML whose exclude rules keep the loss
    within --budget nats of the exact model (greedy, most helpful first); 'newcompute train --config' takes it.
    Deterministic given --seed.
    """
    from newcompute.composer import report_of
    from newcompute.telemetry.sensitivity import LossMeter, analyse, owned_units, plan_document
    from newcompute.telemetry.sensitivity_render import sensitivity_plot, sensitivity_table
    from newcompute.threads import use_threads
    from newcompute.train.evaluation import load_model_for_eval

    run = run_config(config, set_, flags, paradigm_config)
    target = load_model_for_eval(run, paradigm, trust_remote_code=trust_remote_code)
    threads = use_threads(run.train.threads)
    for key, value in [*target.used, ("Threads", threads)]:
        console.print(f"[bold]{key}:[/] {escape(str(value))}", highlight=False)
    composed = report_of(target.model)
    units = owned_units(target.model, unit)
    micro = batch_size or run.train.micro_batch_size
    blocks = target.corpus.validation[: batches * micro]
    meter = LossMeter(target.model, blocks, micro, target.accelerator, run.train.seed)
    report = analyse(meter, units, budget)
    console.print(sensitivity_table(report))
    toml_path = toml.expanduser()
    toml_path.parent.mkdir(parents=True, exist_ok=True)
    toml_path.write_text(plan_document(target.run, composed.uses if composed else [], report, unit), encoding="utf-8")
    verdict = "within" if report.within_budget else "NOT within (every unit exact still misses it)"
    console.print(
        f"Plan: {len(report.excluded)} of {len(units)} {unit}s exact, loss {report.plan_loss:.4f}, {verdict} "
        f"the budget {budget:g} over the exact {report.exact_loss:.4f} ({meter.passes} passes over "
        f"{len(meter.batches)} batches). Run TOML: {toml_path} (newcompute train --config {toml_path})",
        highlight=False,
        markup=False,
    )
    console.print(f"Plot: {sensitivity_plot(report, plot.expanduser())}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` and ``sensitivity`` to the app."""
    app.command()(inspect)
    app.command()(sensitivity)
