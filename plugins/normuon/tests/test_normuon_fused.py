"""The fused Triton elementwise kernels equal the ``torch._foreach`` path bit for bit, in Triton's CPU interpreter.

Both paths compute the same operations in the same order (torch's lerp and
``addcmul`` are fused multiply-adds on CPU, and so are the kernels), so the
comparison in float32 is exact: a wrong stride, slot, row factor or rounding
point shows up as a mismatch. Cases cover Nesterov on and off, wide and tall
blocks, transposed (``Conv1D``) storage, split blocks, 3-D tensors, weight
decay on and off, and tiles smaller than the blocks (so masks and several
programs per block are exercised); then the whole optimizer with the kernels
against itself without them, over steps whose learning rate changes. The
interpreter rounds float32 to bfloat16 by truncation (the GPU rounds to
nearest even), so bfloat16 tensors are compared on the GPU
(test_normuon_gpu.py). The interpreter must be switched on before the
kernels are defined, so the checks run in a fresh process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import itertools
import torch
from newcompute_normuon import NorMuonAdamW, ops
from newcompute_normuon.kernels import elementwise
from newcompute_normuon.layout import Block, block_view

TILE = (16, 16)
generator = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=generator)


# (stored shape, transposed, blocks, tall): every layout a stack slot can have.
LAYOUTS = {
    "wide": ((24, 40), False, (Block(0, 24),), False),
    "tall": ((40, 24), False, (Block(0, 40),), True),
    "conv1d split": ((40, 24), True, (Block(0, 12), Block(12, 24)), False),
    "conv1d tall": ((24, 40), True, (Block(0, 40),), True),
    "3-d": ((6, 4, 5), False, (Block(0, 3), Block(3, 6)), False),
}


def slots(tensors, layout):
    _, transposed, blocks, tall = LAYOUTS[layout]
    return [block_view(t, transposed, b, tall) for t in tensors for b in blocks]


def stack_shape(layout):
    shape, transposed, blocks, tall = LAYOUTS[layout]
    view = block_view(torch.empty(shape), transposed, blocks[0], tall)
    return (2 * len(blocks), *view.shape)


def check_momentum(layout, nesterov):
    shape = LAYOUTS[layout][0]
    grads = [randn(*shape) for _ in range(2)]
    start = [randn(*shape) for _ in range(2)]
    want_momenta, got_momenta = [m.clone() for m in start], [m.clone() for m in start]
    want = torch.full(stack_shape(layout), float("nan"))
    got = want.clone()
    ops.advance_momenta(want_momenta, grads, 0.9)
    ops.stack_sources(slots(grads, layout), slots(want_momenta, layout), want, 0.9, nesterov)
    elementwise.momentum_into_stack(slots(grads, layout), slots(got_momenta, layout), got, 0.9, nesterov, block=TILE)
    assert all(torch.equal(a, b) for a, b in zip(got_momenta, want_momenta)), "momentum"
    assert torch.equal(got, want), f"stack differs by {(got.double() - want.double()).abs().max()}"


def check_update(layout, decay):
    shape, _, _, tall = LAYOUTS[layout]
    weights = [randn(*shape) for _ in range(2)]
    ortho = randn(*stack_shape(layout)).bfloat16()
    scales = randn(ortho.size(0), ortho.size(2) if tall else ortho.size(1)).abs()
    neg_lr = torch.tensor(-0.37)
    decay = torch.tensor(0.93) if decay else None
    want, got = [w.clone() for w in weights], [w.clone() for w in weights]
    ops.apply_updates(slots(want, layout), ortho, scales, tall, neg_lr, decay)
    elementwise.apply_update(slots(got, layout), ortho, scales, tall, neg_lr, decay, block=TILE)
    assert all(torch.equal(a, b) for a, b in zip(got, want)), "weights"


def train(elementwise):
    torch.manual_seed(0)
    shapes = {"q": (16, 16), "k": (16, 16), "up": (40, 16), "down": (16, 40), "conv": (6, 4, 3),
              "c_attn": (16, 48), "gate_up": (24, 16), "bias": (7,)}
    params = {n: torch.nn.Parameter(torch.randn(*s)) for n, s in shapes.items()}
    params["odd"] = torch.nn.Parameter(torch.randn(5, 3, 4))
    common = {"optimizer": "normuon", "lr": 0.02, "ns_dtype": "float32"}
    optimizer = NorMuonAdamW([
        common | {"params": [params[n] for n in ("q", "k", "up", "down", "conv")], "weight_decay": 0.1},
        common | {"params": [params["c_attn"]], "transposed": True, "splits": 3, "nesterov": False},
        common | {"params": [params["gate_up"]], "splits": (16, 8), "momentum": 0.9, "beta2": 0.99},
        common | {"params": [params["odd"]]},
        {"optimizer": "adamw", "lr": 0.01, "params": [params["bias"]]},
    ], elementwise=elementwise)
    for step in range(3):
        for p in params.values():
            p.grad = torch.randn_like(p)
        # flatten(1) of this gradient is a copy, so the fused kernel cannot read it: the torch path takes the group
        params["odd"].grad = torch.randn(4, 3, 5).permute(2, 1, 0)
        for group in optimizer.param_groups:
            group["lr"] *= 0.5 + step
        optimizer.step()
    states = [t for p in params.values() for t in optimizer.state[p].values() if torch.is_tensor(t)]
    return [p.detach() for p in params.values()] + states


failures = []
for layout, nesterov in itertools.product(LAYOUTS, (True, False)):
    try:
        check_momentum(layout, nesterov)
    except AssertionError as exc:
        failures.append(f"momentum {layout} nesterov={nesterov}: {exc}")
for layout, decay in itertools.product(LAYOUTS, (True, False)):
    try:
        check_update(layout, decay)
    except AssertionError as exc:
        failures.append(f"update {layout} decay={decay}: {exc}")
for i, (a, b) in enumerate(zip(train("triton"), train("torch"))):
    if not torch.equal(a, b):
        failures.append(f"optimizer: tensor {i} differs by {(a.double() - b.double()).abs().max()}")
print("\n".join(failures) or "ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_fused_kernels_equal_the_foreach_path_in_the_triton_interpreter() -> None:
    env = os.environ | {"TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok", done.stdout[-3000:]
