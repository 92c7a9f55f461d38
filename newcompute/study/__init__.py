"""Studies: many runs as one experiment, and their results.

:mod:`~newcompute.study.grid` expands a sweep grid into validated points,
:mod:`~newcompute.study.runner` runs them (resumable, in parallel, in
shards), :mod:`~newcompute.study.results` tabulates and exports runs and
sweeps, :mod:`~newcompute.study.plots` draws them.
"""

from newcompute.study.grid import Grid, Point, expand, read_grid
from newcompute.study.results import Results, run_results, sweep_rows
from newcompute.study.sweep import SweepResult, plan_sweep, run_sweep

__all__ = [
    "Grid",
    "Point",
    "Results",
    "SweepResult",
    "expand",
    "plan_sweep",
    "read_grid",
    "run_results",
    "run_sweep",
    "sweep_rows",
]
