"""``newcompute sweep`` and ``newcompute results``: from a grid of runs to a table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from newcompute.cli.common import INTERRUPTED, user_errors
from newcompute.cli.render import console
from newcompute.errors import ConfigError

if TYPE_CHECKING:
    from newcompute.study.results import Results

FormatOption = Annotated[
    str, typer.Option("--format", "-f", help="table (printed), md, csv or json.", metavar="table|md|csv|json")
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", help="Write the md/csv/json export to this file instead of printing it.")
]
XOption = Annotated[
    str, typer.Option("--x", help="The curves' x-axis: tokens (default) or steps.", metavar="tokens|steps")
]


def note(text: str) -> None:
    console.print(text, highlight=False, markup=False)


@user_errors
def sweep(
    grid: Annotated[Path, typer.Argument(help="A grid TOML file: \\[sweep], \\[base] (a run config) and \\[axes].")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="The sweep folder (default: \\[sweep] output_dir).")
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Points run at once, as subprocesses (one GPU each where there are GPUs).")
    ] = 1,
    shard: Annotated[
        str | None, typer.Option(help="I/N: run only the points whose index is I modulo N (e.g. a SLURM array).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the grid and list its points; run nothing.")
    ] = False,
) -> None:
    """Run a grid of runs: paradigms × settings × seeds, one run folder per point, resumable, then results.csv.

    Finished points are skipped and interrupted ones resume, so the same command continues a sweep that was
    stopped. Every point is checked before the first one starts.
    """
    from newcompute.plugins import get_registry
    from newcompute.study.runner import action_for, parse_shard, shard_points
    from newcompute.study.sweep import plan_sweep, run_sweep

    part = parse_shard(shard) if shard is not None else None
    if dry_run:
        folder, points = plan_sweep(grid, get_registry(), output_dir)
        mine = {p.name for p in shard_points(points, part)}
        for point in points:
            state = action_for(folder, point.name) if point.name in mine else "another shard"
            note(f"{point.name}: {state}")
        note(f"{len(points)} points; manifest {folder.manifest}")
        return
    result = run_sweep(grid, output_dir, jobs=jobs, shard=part, console=console)
    counts = {o: sum(r.outcome == o for r in result.results) for o in ("finished", "skipped", "failed", "busy")}
    note(
        f"Sweep {result.folder.root}: {counts['finished']} finished now, {counts['skipped']} finished before, "
        f"{counts['failed']} failed, {counts['busy']} held by another process. Results: {result.folder.results}"
    )
    if result.interrupted:
        note("Stopped: run the same command again to continue the sweep.")
        raise typer.Exit(INTERRUPTED)
    if result.failed:
        raise typer.Exit(1)


def check_format(fmt: str) -> None:
    from newcompute.study.results import FORMATS

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")


def emit(results: Results, fmt: str, output: Path | None, title: str) -> None:
    """Print the table, or print or write the md/csv/json export."""
    from newcompute.study.results import as_table, render

    if fmt == "table":
        if output is not None:
            raise ConfigError("--output writes an export: pass --format md, csv or json with it.")
        console.print(as_table(results, title))
        return
    text = render(results, fmt)  # type: ignore[arg-type]
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.expanduser().parent.mkdir(parents=True, exist_ok=True)
        output.expanduser().write_text(text, encoding="utf-8")
        console.print(f"Wrote {escape(str(output))}", highlight=False)


@user_errors
def results(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep folder written by 'newcompute sweep'.")],
    fmt: FormatOption = "table",
    output: OutputOption = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of every point's loss curves here.")] = None,
    x: XOption = "tokens",
    axis: Annotated[
        str | None,
        typer.Option(help="Also plot the final loss against this axis (seeds as error bars), to --axis-plot."),
    ] = None,
    axis_plot: Annotated[Path, typer.Option(help="Where the --axis PNG goes.")] = Path("final-loss.png"),
) -> None:
    """The results of a sweep: one row per point with its axis values, final and periodic losses, Δ vs the
    baseline, throughput, memory, cost estimates and lm-eval scores."""
    from newcompute.study.plots import plot_against_axis, plot_curves
    from newcompute.study.folder import SweepFolder, read_manifest
    from newcompute.study.results import sweep_rows
    from newcompute.train.compare import summarize
    from newcompute.train.metrics import METRICS_FILE

    check_format(fmt)
    root = sweep_dir.expanduser()
    table = sweep_rows(root, note)
    emit(table, fmt, output, f"Sweep {root}")
    if plot is not None:
        folder = SweepFolder(root)
        runs = [folder.root / e["run_dir"] for e in read_manifest(root)["points"]]
        summaries = [summarize(r, note) for r in runs if (r / METRICS_FILE).is_file()]
        note(f"Loss curves: {plot_curves(summaries, plot.expanduser(), x)}")
    if axis is not None:
        note(f"Final loss against {axis}: {plot_against_axis(table, axis, axis_plot.expanduser())}")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` and ``results`` to the app."""
    app.command()(sweep)
    app.command()(results)
