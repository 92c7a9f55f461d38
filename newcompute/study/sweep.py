"""``newcompute sweep`` as a library call: read the grid, check every point, run what is left, write results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from newcompute.plugins import Registry, get_registry
from newcompute.study.compose_check import check_compositions
from newcompute.study.folder import SweepFolder, prepare
from newcompute.study.grid import Point, expand, read_grid
from newcompute.study.results import sweep_rows, write_csv
from newcompute.study.runner import (
    Action,
    Outcome,
    PointResult,
    run_in_process,
    run_in_subprocesses,
    shard_points,
    visible_gpus,
)
from newcompute.train import train


@dataclass(frozen=True)
class SweepResult:
    folder: SweepFolder
    points: list[Point]
    """Every point of the grid (all shards)."""
    results: list[PointResult]
    """What happened to this shard's points, in the order they ended."""

    @property
    def interrupted(self) -> bool:
        return any(r.outcome == "interrupted" for r in self.results)

    @property
    def failed(self) -> list[PointResult]:
        return [r for r in self.results if r.outcome == "failed"]


def plan_sweep(grid_file: Path, registry: Registry, output_dir: Path | None = None) -> tuple[SweepFolder, list[Point]]:
    """Read and validate the whole grid, then write the sweep folder's manifest and run files."""
    grid = read_grid(grid_file, output_dir)
    points = expand(grid, registry)
    check_compositions(points, registry, f"Sweep grid {grid.source}")
    return prepare(grid, points), points


def run_sweep(
    grid_file: Path,
    output_dir: Path | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    registry: Registry | None = None,
    console: Console | None = None,
) -> SweepResult:
    """Run every point of ``grid_file`` not finished yet (of this ``shard``), then write ``results.csv``."""
    registry = registry or get_registry()
    console = console or Console()

    def notify(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    folder, points = plan_sweep(grid_file, registry, output_dir)
    mine = shard_points(points, shard)
    part = f" (shard {shard[0]}/{shard[1]}: {len(mine)} of them)" if shard else ""
    notify(f"Sweep {folder.root}: {len(points)} points{part}.")

    def train_here(point: Point, action: Action) -> Outcome:
        console.rule(point.name)
        result = train(
            point.run_config(),
            registry=registry,
            resume=action == "resume",
            overwrite=action == "restart",
            console=console,
        )
        return result.status

    if jobs == 1:
        results = run_in_process(folder, mine, train_here, notify)
    else:
        results = run_in_subprocesses(folder, mine, jobs, visible_gpus(), notify)
    write_csv(sweep_rows(folder.root), folder.results)
    return SweepResult(folder, points, results)
