"""The conformance suite itself: a correct plugin passes it, and each kind of broken plugin is caught.

Every broken plugin below differs from the correct one in exactly one
respect, and the test names the check that must catch it.
"""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

import newcompute as nc
from newcompute.testing import (
    ConformanceFailure,
    ConformanceSpec,
    check_api_declared,
    check_attend,
    check_bad_tables_rejected,
    check_config_documented,
    check_config_record_round_trip,
    check_identity,
    check_meta_device,
    check_no_host_sync,
    check_resume,
    check_state_dict_round_trip,
    check_trains,
    check_transform,
    generated_bad_tables,
    paradigm_conformance,
)


class ShiftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shift: float = Field(0.25, ge=0.0, description="Added to every output of a linear layer.")


class ShiftLinear(nc.ReplacedLinear):
    """Adds ``shift`` to the output and counts calls in a buffer (state that must be saved)."""

    def __init__(self, source: nn.Module, shift: float) -> None:
        super().__init__(source)
        self.shift = shift
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64, device=source.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.calls += 1
        out = F.linear(x, self.weight_out_in(), self.bias)
        return out if self.shift == 0.0 else out + self.shift


class ShiftPlugin:
    """A correct plugin; subclasses below break one rule each."""

    newcompute_api = ">=1.0,<2"
    config: type[BaseModel] = ShiftConfig
    layer: type[ShiftLinear] = ShiftLinear

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("shift", "Shifted linear outputs", self.config, frozenset({nc.Role.LAYER}))]

    @nc.hookimpl
    def newcompute_replace_layer(
        self, paradigm: nc.Paradigm, config: ShiftConfig, name: str, module: nn.Module
    ) -> nn.Module | None:
        return self.layer(module, config.shift) if nc.is_linear_like(module) else None


def spec_for(plugin: object, **options: object) -> ConformanceSpec:
    return ConformanceSpec(
        plugin=plugin, paradigm="shift", identity_table={"shift": 0.0}, families=("tiny-gpt2",), **options
    )


GOOD = spec_for(ShiftPlugin(), bad_tables=[{"shift": -1.0}])

TestShiftConformance = paradigm_conformance(GOOD, entry_point=False)


def test_generated_bad_tables_cover_unknown_keys_and_each_typed_field() -> None:
    class Nested(BaseModel):
        levels: int = 4

    class Config(BaseModel):
        p: float | None = 0.5
        on: bool = True
        mode: Literal["a", "b"] = "a"
        name: str = "x"
        inner: Nested = Nested()
        anything: list[int] = []

    assert generated_bad_tables(Config) == [
        ("definitely_not_a_field", {"definitely_not_a_field": 1}),
        ("p", {"p": "not-a-number"}),
        ("on", {"on": "maybe"}),
        ("mode", {"mode": "definitely-not-a-choice"}),
        ("name", {"name": ["not", "a", "string"]}),
        ("inner", {"inner": "not-a-table"}),
        ("inner.levels", {"inner": {"levels": "not-a-number"}}),
    ]


class NoApiDeclared(ShiftPlugin):
    newcompute_api = None


def test_missing_api_range_is_caught() -> None:
    with pytest.raises(ConformanceFailure, match="does not declare the plugin API"):
        check_api_declared(spec_for(NoApiDeclared()))


def test_bad_table_that_validates_is_caught() -> None:
    with pytest.raises(ConformanceFailure, match=r"accepted the invalid table \{'shift': 100.0\}"):
        check_bad_tables_rejected(spec_for(ShiftPlugin(), bad_tables=[{"shift": 100.0}]))


class WithNone(ShiftConfig):
    limit: float | None = Field(None, description="Optional clamp; None (the default) means no clamp.")


class WithNonePlugin(ShiftPlugin):
    config = WithNone


class NoneOverDefault(ShiftConfig):
    limit: float | None = Field(4.0, description="Clamp; None switches it off, which TOML cannot record.")


class NoneOverDefaultPlugin(ShiftPlugin):
    config = NoneOverDefault


def test_none_default_round_trips_through_the_record() -> None:
    check_config_record_round_trip(spec_for(WithNonePlugin()))


@pytest.mark.parametrize("table", [{}, {"limit": None}], ids=["defaults", "set-to-none"])
def test_none_over_a_non_none_default_is_caught(table: dict[str, object]) -> None:
    """Caught from the config class alone, not only when the spec's table happens to set None."""
    with pytest.raises(ConformanceFailure, match=r"fields \['limit'\] accept None but default to something else"):
        check_config_record_round_trip(spec_for(NoneOverDefaultPlugin(), table=table))


class Undocumented(ShiftConfig):
    gain: float = 1.0


class UndocumentedPlugin(ShiftPlugin):
    config = Undocumented


def test_undocumented_field_is_caught() -> None:
    with pytest.raises(ConformanceFailure, match=r"without a description: \['gain'\]"):
        check_config_documented(spec_for(UndocumentedPlugin()))


class CopiesWeights(ShiftLinear):
    """Keeps its own copy of the weight under a new name: checkpoints no longer line up."""

    def __init__(self, source: nn.Module, shift: float) -> None:
        super().__init__(source, shift)
        del self.weight
        self.kernel = nn.Parameter(source.weight.detach().clone())

    def weight_out_in(self) -> torch.Tensor:
        return self.kernel.t() if self.weight_transposed else self.kernel


class CopiesWeightsPlugin(ShiftPlugin):
    layer = CopiesWeights


def test_renamed_parameters_are_caught() -> None:
    with pytest.raises(ConformanceFailure, match="parameter 'transformer.h.0.attn.c_attn.weight' disappeared"):
        check_transform(spec_for(CopiesWeightsPlugin()), "tiny-gpt2")


class CpuBuffer(ShiftLinear):
    def __init__(self, source: nn.Module, shift: float) -> None:
        super().__init__(source, shift)
        self.register_buffer("scale", torch.ones(()))


class CpuBufferPlugin(ShiftPlugin):
    layer = CpuBuffer


def test_buffers_created_off_the_model_device_are_caught() -> None:
    with pytest.raises(ConformanceFailure, match=r"tensors created off the model's device: \['.*scale \(cpu\)'"):
        check_meta_device(spec_for(CpuBufferPlugin()), "tiny-gpt2")


class PythonCounter(ShiftLinear):
    """Keeps its call count in a Python attribute, which no state dict carries."""

    def __init__(self, source: nn.Module, shift: float) -> None:
        super().__init__(source, shift)
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return super().forward(x) + 1e-3 * self.count


class PythonCounterPlugin(ShiftPlugin):
    layer = PythonCounter


def test_state_kept_outside_the_state_dict_is_caught() -> None:
    spec = spec_for(PythonCounterPlugin())
    with pytest.raises(ConformanceFailure, match="restored from the state dict computes different logits"):
        check_state_dict_round_trip(spec, "tiny-gpt2")
    with pytest.raises(ConformanceFailure, match="resumed losses"):
        check_resume(spec, "tiny-gpt2")


class Detached(ShiftLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_out_in().detach(), self.bias) + self.shift


class DetachedPlugin(ShiftPlugin):
    layer = Detached


def test_replacement_that_blocks_gradients_is_caught() -> None:
    with pytest.raises(ConformanceFailure, match=r"no gradient reaches the parameters \['weight'\] of replaced layer"):
        check_trains(spec_for(DetachedPlugin()), "tiny-gpt2")


class NeverExact(ShiftLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_out_in(), self.bias) + self.shift + 1e-6


class NeverExactPlugin(ShiftPlugin):
    layer = NeverExact


def test_identity_table_that_is_not_exact_is_caught() -> None:
    with pytest.raises(ConformanceFailure, match=r"with \{'shift': 0.0\} is not the identity"):
        check_identity(spec_for(NeverExactPlugin()), "tiny-gpt2")


class SyncsHost(ShiftLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max().item() > 1e30:
            raise RuntimeError("overflow")
        return super().forward(x)


class SyncsHostPlugin(ShiftPlugin):
    layer = SyncsHost


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_sync_check_passes_a_clean_plugin_and_catches_item_calls() -> None:
    check_no_host_sync(spec_for(ShiftPlugin(), gpu=True), "tiny-gpt2")
    with pytest.raises(ConformanceFailure, match="synchronises the host with the GPU"):
        check_no_host_sync(spec_for(SyncsHostPlugin(), gpu=True), "tiny-gpt2")


class WholeAttention(nc.AttentionMatmuls):
    """Exact products, and an ``attend`` computing the same attention in one call (times ``gain``)."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return query @ key.transpose(-1, -2)

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return probs @ value

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool
    ) -> torch.Tensor | None:
        groups = query.shape[1] // key.shape[1]
        out = F.scaled_dot_product_attention(
            query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), is_causal=causal, scale=scale
        )
        return out * self.gain


class WholeAttentionPlugin(ShiftPlugin):
    gain = 1.0

    @nc.hookimpl
    def newcompute_register_paradigms(self) -> list[nc.Paradigm]:
        return [nc.Paradigm("shift", "Whole attention", self.config, frozenset({nc.Role.ATTENTION}))]

    @nc.hookimpl
    def newcompute_attention_matmuls(self) -> nc.AttentionMatmuls:
        return WholeAttention(self.gain)


class WrongAttentionPlugin(WholeAttentionPlugin):
    gain = 1.5


def test_attend_that_matches_the_products_passes_and_one_that_does_not_is_caught() -> None:
    check_attend(spec_for(WholeAttentionPlugin()), "tiny-gpt2")
    with pytest.raises(ConformanceFailure, match="attention through attend differs from its qk/pv products"):
        check_attend(spec_for(WrongAttentionPlugin()), "tiny-gpt2")
