"""Which lm-eval-harness tasks ``--tasks`` names, and whether they can run here.

``--tasks`` takes registry names (``hellaswag``) and paths of local task
YAML files (``tasks/my_mc.yaml``), mixed; ``--include-path DIR`` adds a
folder of task YAML (for tasks that ``include:`` others, or groups). A local
file is indexed through its folder and run by the name in its ``task:`` key,
so it works as lm-eval's own ``--include_path`` would.

A registry task reads its data from the Hugging Face hub. Without a network
lm-eval retries for most of a minute and then fails with a traceback; here
such a task is refused at once (exit 2) unless ``HF_DATASETS_OFFLINE=1``
says its data is in the local cache. A local task whose data is local (e.g.
``dataset_path: json`` with ``data_files``) needs no network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from newcompute.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TaskSelection:
    names: list[str]
    """What lm-eval is asked to run: registry names and the local files' ``task:`` names."""
    include_paths: list[Path] = field(default_factory=list)
    registry: list[str] = field(default_factory=list)
    """The names that come from lm-eval's own registry (their data from the hub)."""


def _task_name(path: Path) -> str:
    """The ``task:`` key of a task YAML (lm-eval's ``!function`` tags are read as text, not run)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--tasks {path}: not a readable task YAML ({exc}).") from None
    name = config.get("task") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"--tasks {path}: a task YAML needs a 'task: NAME' key (lm-eval's task config); this file has none."
        )
    return name


def select_tasks(specs: list[str], include_paths: list[Path] | None = None) -> TaskSelection:
    """Split ``--tasks`` into local YAML files and registry names, checking the files exist."""
    names: list[str] = []
    folders: list[Path] = []
    registry: list[str] = []
    for folder in include_paths or []:
        if not folder.expanduser().is_dir():
            raise ConfigError(f"--include-path {folder}: not a folder of task YAML files.")
        folders.append(folder.expanduser().resolve())
    for spec in specs:
        path = Path(spec).expanduser()
        if spec.endswith(YAML_SUFFIXES):
            if not path.is_file():
                raise ConfigError(f"--tasks {spec}: no such task YAML file.")
            names.append(_task_name(path))
            if path.resolve().parent not in folders:
                folders.append(path.resolve().parent)
        else:
            names.append(spec)
            registry.append(spec)
    return TaskSelection(names, folders, registry)


def check_reachable(selection: TaskSelection, hub_reachable: bool) -> None:
    """Refuse registry tasks at once when their data cannot be fetched and is not declared cached."""
    local = {p for p in selection.include_paths}
    remote = [name for name in selection.registry if not _defined_in(name, local)]
    if not remote or hub_reachable or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return
    raise ConfigError(
        f"--tasks {', '.join(remote)}: lm-eval's registry task(s) read their data from the Hugging Face hub, which "
        "is not reachable from here. Run them where the hub is reachable, set HF_DATASETS_OFFLINE=1 if their data "
        "is already in the local datasets cache, or pass a local task YAML (with local data_files) instead."
    )


def _defined_in(name: str, folders: set[Path]) -> bool:
    """Whether a task of this name is one of the local folders' YAML files (then it is not the registry's)."""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.suffix in YAML_SUFFIXES and path.is_file():
                try:
                    if _task_name(path) == name:
                        return True
                except ConfigError:
                    continue
    return False
