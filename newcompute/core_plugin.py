"""The core's own plugin, registered first in every registry as ``newcompute-core``.

The core provides its built-ins through the same registration hooks a
third-party plugin implements, so there is one path for each kind of
extension and a plugin's additions sit next to the core's on equal terms
(a name clash is reported against whichever registered second).
"""

from __future__ import annotations

from newcompute.core_sources import CORE_SOURCES
from newcompute.datasource import DataSource
from newcompute.disk_datasets import DISK_DATASET_SOURCE
from newcompute.hookspecs import hookimpl
from newcompute.presets import CORE_PRESETS, Preset
from newcompute.token_files import TOKEN_FILE_SOURCES


@hookimpl
def newcompute_register_presets() -> list[Preset]:
    return list(CORE_PRESETS)


@hookimpl
def newcompute_register_data_sources() -> list[DataSource]:
    return [*CORE_SOURCES, *TOKEN_FILE_SOURCES, DISK_DATASET_SOURCE]
