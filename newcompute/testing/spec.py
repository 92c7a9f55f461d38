"""What a plugin tells the conformance suite about the paradigm under test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from newcompute.config import ParadigmUse, resolve_paradigm
from newcompute.paradigm import Paradigm
from newcompute.plugins import Registry
from newcompute.testing.failure import ConformanceFailure, require
from newcompute.testing.models import DEFAULT_FAMILIES
from newcompute.testing.partner import PartnerPlugin


@dataclass(frozen=True)
class ConformanceSpec:
    """One paradigm of one plugin, and what the checks may expect of it.

    ``plugin`` is the object the ``newcompute`` entry point loads (usually
    the plugin module). ``table`` is the config table to test with, as a
    user writes it under ``[paradigm.NAME]``; empty means the defaults.
    ``bad_tables`` must each be refused with a ``ConfigError`` (an unknown
    key and wrong-typed values are generated for you on top).
    ``identity_table``, when the paradigm has a bypass, must make the model
    compute exactly what the unmodified model computes. ``gpu`` declares
    that the paradigm runs on CUDA without host synchronisation. ``lr`` is
    the base learning rate of the few-step training check, and ``learns``
    says the loss on a repeated batch must fall within those steps.
    ``deterministic`` says two identical models fed identically produce
    identical numbers (random paradigms qualify when their generator state
    lives in the state dict).
    """

    plugin: object
    paradigm: str
    table: Mapping[str, Any] = field(default_factory=dict)
    bad_tables: Sequence[Mapping[str, Any]] = ()
    identity_table: Mapping[str, Any] | None = None
    families: Sequence[str] = DEFAULT_FAMILIES
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16)
    gpu: bool = False
    lr: float = 1e-2
    learns: bool = True
    deterministic: bool = True
    plugin_name: str = ""

    @property
    def registered_name(self) -> str:
        return self.plugin_name or getattr(self.plugin, "__name__", type(self.plugin).__name__)

    def registry(self) -> Registry:
        """A fresh registry holding only this plugin and the suite's partner plugin."""
        registry = Registry()
        record = registry.register(self.plugin, name=self.registered_name)
        require(
            record.status == "ok",
            f"Plugin {self.registered_name} did not register cleanly: status {record.status!r}, reason: {record.error}",
        )
        registry.register(PartnerPlugin(), name="newcompute-conformance-partner")
        if self.paradigm not in registry.paradigms:
            raise ConformanceFailure(
                f"Plugin {self.registered_name} registered {record.paradigms or 'no paradigms'}, "
                f"not {self.paradigm!r}: check the name in newcompute_register_paradigms."
            )
        return registry

    def declared(self, registry: Registry) -> Paradigm:
        return registry.get(self.paradigm)

    def use(self, registry: Registry, table: Mapping[str, Any] | None = None) -> ParadigmUse:
        """The paradigm resolved from ``table`` (default: the spec's table), as ``newcompute train`` would."""
        return resolve_paradigm(registry, self.paradigm, dict(self.table if table is None else table))
