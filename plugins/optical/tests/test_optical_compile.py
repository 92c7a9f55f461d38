"""torch.compile sees the optical product as an operator that updates its buffers."""

from __future__ import annotations

import torch
from optical_support import optical, tiny, tokens
from torch import nn

from newcompute_optical import OpticalLinear, ProductSettings


def test_compiled_layer_matches_eager_in_outputs_grads_and_state() -> None:
    torch.manual_seed(0)
    source = nn.Linear(16, 8)
    eager = OpticalLinear(source, ProductSettings(q_levels=64), "layer")
    twin_source = nn.Linear(16, 8)
    twin_source.load_state_dict(source.state_dict())
    compiled_layer = OpticalLinear(twin_source, ProductSettings(q_levels=64), "layer")
    compiled = torch.compile(compiled_layer, backend="aot_eager", fullgraph=True)
    for seed in range(3):
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(seed))
        expected, got = eager(x), compiled(x)
        assert torch.equal(expected, got)
        expected.sum().backward()
        got.sum().backward()
    assert torch.equal(source.weight.grad, twin_source.weight.grad)
    for mine, theirs in zip(eager.optical.buffers(), compiled_layer.optical.buffers()):
        assert torch.equal(mine, theirs)


def test_compiled_model_trains_like_eager() -> None:
    ids = tokens()
    losses = []
    for compile_it in (False, True):
        model = tiny("llama", layers=1)
        optical(model)
        model.train()
        step = torch.compile(model, backend="aot_eager") if compile_it else model
        run = [step(input_ids=ids, labels=ids).loss for _ in range(2)]
        run[-1].backward()
        losses.append(torch.stack(run))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
