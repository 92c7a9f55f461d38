"""What a plugin declares about each compute paradigm it provides."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict


class Role(str, enum.Enum):
    """The parts of a model a paradigm may take over.

    The composer uses roles to decide which hooks to call for a paradigm and to
    refuse compositions where two paradigms would fight over the same thing.
    """

    LAYER = "layer"
    ATTENTION = "attention"
    OPTIMIZER = "optimizer"


class StrictConfig(BaseModel):
    """A base for paradigm configs: unknown keys are refused, numbers are finite, a validated config cannot change.

    Refusing unknown keys turns a typo into an error naming it rather than a
    setting silently ignored; an ``inf`` or ``nan`` in a noise level or a
    range would reach the numerics and quietly ruin a run, and TOML cannot
    record it back anyway. Freezing keeps the config that layers were built
    from the one the run records.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


RESERVED_CONFIG_KEYS = frozenset({"include", "exclude"})
"""Keys the core reads from every paradigm table; a paradigm config may not define them."""


@dataclass(frozen=True)
class Paradigm:
    """A compute paradigm as declared by ``newcompute_register_paradigms``.

    ``config`` is a pydantic model whose every field has a default: users
    should be able to name a paradigm and get its published recipe.
    ``plugin`` and ``version`` are filled in by the plugin manager from the
    distribution that registered it, so plugin authors leave them empty.

    ``capturable`` declares that the modules this paradigm installs can be
    captured in a CUDA graph and replayed: their forward and backward
    neither synchronise with the host nor copy from CPU memory, and every
    value that changes from call to call (a noise counter, running ranges)
    lives in a buffer updated in place, not in a Python attribute, which a
    replay would repeat unchanged. ``--cuda-graphs auto`` (the default)
    captures the training step only when every layer and attention
    paradigm of the run declares it.
    """

    name: str
    summary: str
    config: type[BaseModel]
    roles: frozenset[Role]
    plugin: str = ""
    version: str = ""
    docs: str = field(default="", compare=False)
    capturable: bool = False

    def default_config(self) -> BaseModel:
        return self.config()
