"""The sweep folder: the manifest of the grid and its points, each point's run config, logs and run folder.

::

    SWEEP/sweep.json          the grid as read and every point (name, axis values, config)
    SWEEP/configs/NAME.toml   the point's run file: ``newcompute train --config`` runs it alone
    SWEEP/runs/NAME/          the point's run folder (what ``newcompute train`` writes)
    SWEEP/logs/NAME.log       its output, when points run as subprocesses (--jobs > 1)
    SWEEP/results.csv         the results table, rewritten after every sweep command

A point's settings are fixed once the sweep has started: running the grid
again continues the same points, so a grid whose points changed is refused
(the finished runs would otherwise be counted as results of settings they
were not trained with). New points, from a grid with more values, are added.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from newcompute.errors import ConfigError
from newcompute.study.grid import Grid, Point, value_text

MANIFEST = "sweep.json"
CONFIGS = "configs"
RUNS = "runs"
LOGS = "logs"
RESULTS = "results.csv"


@dataclass(frozen=True)
class SweepFolder:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def config(self, point: str) -> Path:
        return self.root / CONFIGS / f"{point}.toml"

    def run_dir(self, point: str) -> Path:
        return self.root / RUNS / point

    def log(self, point: str) -> Path:
        return self.root / LOGS / f"{point}.log"

    @property
    def results(self) -> Path:
        return self.root / RESULTS


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def point_entry(point: Point, folder: SweepFolder) -> dict[str, Any]:
    return {
        "name": point.name,
        "values": {key: _json_value(value) for key, value in point.values.items()},
        "labels": {key: value_text(value) for key, value in point.values.items()},
        "paradigms": list(point.paradigms),
        "run_dir": str(folder.run_dir(point.name).relative_to(folder.root)),
        "config": point.config,
    }


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"{root} is not a sweep folder: it has no {MANIFEST}. Pass a folder that 'newcompute sweep' wrote."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}): the file was edited or damaged.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list):
        raise ConfigError(f"{path} is not a sweep manifest (it needs a list of points).")
    return manifest


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """A point's settings without its run folder, which may be spelled another way (relative, absolute)."""
    train = {k: v for k, v in config.get("train", {}).items() if k != "output_dir"}
    return {**config, "train": train}


def prepare(grid: Grid, points: list[Point]) -> SweepFolder:
    """Write (or extend) the manifest and every point's run file; refuse points whose settings changed."""
    folder = SweepFolder(grid.output_dir)
    known: dict[str, dict[str, Any]] = {}
    if folder.manifest.is_file():
        known = {entry["name"]: entry for entry in read_manifest(folder.root)["points"]}
    elif folder.root.is_dir() and any(folder.root.iterdir()):
        raise ConfigError(
            f"{folder.root} holds files but no {MANIFEST}: it is not a sweep folder, and a sweep never writes "
            "into someone else's folder. Choose another with --output-dir or [sweep] output_dir."
        )
    changed = [p.name for p in points if p.name in known and _settings(known[p.name]["config"]) != _settings(p.config)]
    if changed:
        raise ConfigError(
            f"The settings of point(s) {', '.join(changed[:5])} differ from those {folder.root} started them with "
            f"(see {folder.manifest}). A sweep continues its points as they were started: restore the grid, or "
            "write the changed grid to a new sweep folder with --output-dir."
        )
    entries = {**known, **{p.name: point_entry(p, folder) for p in points}}
    order = [p.name for p in points] + [name for name in known if name not in {p.name for p in points}]
    manifest = {
        "grid_file": str(grid.source),
        "grid": grid.table,
        "axes": {axis.key: [_json_value(v) for v in axis.values] for axis in grid.axes},
        "baseline": grid.baseline,
        "points": [entries[name] for name in order],
    }
    _atomic(folder.manifest, json.dumps(manifest, indent=1) + "\n")
    for point in points:
        path = folder.config(point.name)
        text = tomli_w.dumps(point.config)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            _atomic(path, text)
    return folder
