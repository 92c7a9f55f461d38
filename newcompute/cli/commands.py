"""The core's own commands: ``list-paradigms``, ``show``, ``presets`` and ``transform``, and ``--version``.

Only what building their options needs is imported with the module (typer,
rich, pydantic and the run config); torch and transformers are imported
inside ``transform``, the one command here that builds a model, so that
``newcompute --help`` and ``newcompute list-paradigms`` start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newcompute import __version__
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
from newcompute.cli.render import config_table, console, paradigms_table, problems_table
from newcompute.config import resolve_paradigms
from newcompute.hookspecs import HOOKSPEC_VERSION
from newcompute.plugins import get_registry


def _version(value: bool) -> None:
    if value:
        console.print(f"newcompute {__version__} (plugin API {HOOKSPEC_VERSION})")
        raise typer.Exit()


def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Simulate how an LLM trains and behaves on hardware that computes differently."""


@user_errors
def list_paradigms() -> None:
    """List installed paradigms, and plugins that failed to load with the reason."""
    registry = get_registry()
    console.print(paradigms_table(registry))
    problems = problems_table(registry)
    if problems is not None:
        console.print(problems)


@user_errors
def show(name: Annotated[str, typer.Argument(help="A paradigm name from 'newcompute list-paradigms'.")]) -> None:
    """Show a paradigm's config fields, types, defaults and documentation."""
    paradigm = get_registry().get(name)
    console.print(config_table(paradigm))
    if paradigm.docs:
        console.print(paradigm.docs)


def presets() -> None:
    """List the model presets (buildable offline with --init scratch), the core's and the plugins'."""
    registry = get_registry()
    table = Table(title="Model presets")
    for column in ("preset", "weights on the hub", "summary", "plugin"):
        table.add_column(column)
    for preset in registry.presets.values():
        plugin = registry.preset_plugin(preset.name)
        shown = "" if plugin == registry.core.distribution else plugin
        table.add_row(preset.name, preset.hub_id or "— (scratch only)", preset.summary, shown)
    console.print(table)


def data_sources() -> None:
    """List the data sources: what --dataset can name (schemes, file suffixes), the core's and the plugins'."""
    registry = get_registry()
    table = Table(title="Data sources")
    for column in ("source", "reads", "summary", "plugin"):
        table.add_column(column)
    for source in registry.data_sources.values():
        plugin = registry.data_source_plugin(source.name).distribution
        shown = "" if plugin == registry.core.distribution else plugin
        reads = [*source.claims, *(["folders it recognises"] if source.folders else [])]
        table.add_row(source.name, ", ".join(reads), source.summary, shown)
    console.print(table)


@user_errors
@with_config_flags("transform")
def transform(
    paradigm: ParadigmOption = None,
    config: ConfigOption = None,
    paradigm_config: ParadigmConfigOption = None,
    set_: SetOption = None,
    save: Annotated[Path | None, typer.Option(help="Save the transformed model and newcompute.toml here.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="With --save: replace a trained run in that folder.")
    ] = False,
    trust_remote_code: TrustRemoteCodeOption = False,
    *,
    flags: list[str],
) -> None:
    """Dry run: build or load a model, apply paradigms, print what changed."""
    from newcompute.composer import apply, verify_attention
    from newcompute.models import load_model, parameter_count
    from newcompute.optim import build_optimizer
    from newcompute.params import OptimizerSettings
    from newcompute.threads import use_threads
    from newcompute.train.budget import default_lr
    from newcompute.train.display import report_tables

    run = run_config(config, set_, flags, paradigm_config)
    use_threads(run.train.threads)
    registry = get_registry()
    uses = resolve_paradigms(registry, run, paradigm)
    loaded = load_model(run.model, seed=run.train.seed, trust_remote_code=trust_remote_code, registry=registry)
    console.print(f"Model: {loaded.source}. Tokenizer: {loaded.tokenizer_source}.", highlight=False, markup=False)
    report = apply(loaded.model, uses, registry=registry, strict=run.train.strict)
    verify_attention(loaded.model)
    params = parameter_count(loaded.model)
    lr = run.train.lr or default_lr(params, "scratch" if loaded.init == "scratch" else "fine-tune")[0]
    settings = OptimizerSettings(lr=lr, weight_decay=run.train.weight_decay, betas=run.train.betas)
    build_optimizer(loaded.model, settings, registry=registry)
    for table in report_tables(report):
        console.print(table)
    console.print(f"Parameters: {params:,}")
    if save is not None:
        from newcompute.train.runs import save_transform

        save_transform(loaded.model, loaded.tokenizer, run, save.expanduser(), overwrite)
        console.print(f"Saved to {save.expanduser()}")


def register(app: typer.Typer) -> None:
    """Add ``list-paradigms``, ``show``, ``presets``, ``data-sources`` and ``transform`` to the app."""
    app.command("list-paradigms")(list_paradigms)
    app.command()(show)
    app.command()(presets)
    app.command("data-sources")(data_sources)
    app.command()(transform)
