"""Spreading the orthogonalisation over ranks gives the single-process step: exactly on CPU.

Two gloo processes on CPU, or two NCCL processes on two GPUs. Each builds the same parameters and gradients,
takes steps with a single-process optimizer (``distributed='off'``) and
with the distributed one, and compares weights and optimizer state:
replicated tensors (the DDP case, also with the fused kernels in Triton's
interpreter),
hand-made ``Shard(0)`` DTensors with uneven shards, and a tiny Llama under
real FSDP2 ``fully_shard``. Exact equality holds because every rank runs
the same kernels on the same inputs; the distribution only decides who
runs them. On GPUs a rank stacks fewer matrices of a shape than the single
process, and cuBLAS may pick another kernel for another batch count, so
there the results agree to a few units of the Newton–Schulz dtype's last
place instead.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from newcompute.testing import backend_params, run_ranks
from newcompute_normuon import NorMuonAdamW, NorMuonConfig, build_groups

WORLD = 2
STEPS = 2


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    """Shapes chosen to cover: several equal shapes (a real batch), tall and wide, odd row counts
    (uneven shards), a 3-D tensor, a fused transposed Conv1D weight, and an AdamW bias."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {
        "a": (12, 8), "b": (12, 8), "c": (12, 8), "wide": (5, 16), "tall": (21, 6), "conv": (7, 3, 2),
        "c_attn": (8, 24), "bias": (9,),
    }
    return {name: torch.randn(*shape, generator=generator) for name, shape in shapes.items()}


def _groups(params: dict[str, torch.Tensor], ns_dtype: str) -> list[dict]:
    common = {"optimizer": "normuon", "lr": 0.05, "weight_decay": 0.1, "ns_dtype": ns_dtype}
    return [
        common | {"params": [(n, params[n]) for n in ("a", "b", "c", "wide", "tall", "conv")], "name": "m"},
        common | {"params": [("c_attn", params["c_attn"])], "transposed": True, "splits": 3, "name": "fused",
                  "coefficients": "polar_express"},
        {"optimizer": "adamw", "lr": 0.01, "params": [("bias", params["bias"])], "name": "adamw"},
    ]


def _run(
    params: dict[str, torch.Tensor], distributed: str, ns_dtype: str, mode: str, shard=None, elementwise: str = "torch"
) -> dict:
    device = next(iter(params.values())).device
    live = {n: torch.nn.Parameter(shard(t) if shard else t.clone()) for n, t in params.items()}
    optimizer = NorMuonAdamW(_groups(live, ns_dtype), distributed=distributed, elementwise=elementwise)
    for step in range(STEPS):
        for name, grad in _tensors(100 + step).items():
            grad = grad.to(device)
            live[name].grad = shard(grad) if shard else grad
        optimizer.step()
    assert optimizer.mode == mode
    whole = {n: (p.full_tensor() if shard else p).detach() for n, p in live.items()}
    for name, param in live.items():
        for key, value in optimizer.state[param].items():
            if torch.is_tensor(value):
                whole[f"{name} {key}"] = value.full_tensor() if hasattr(value, "full_tensor") else value
    return whole


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str, ns_dtype: str) -> None:
    for name in want:
        if want[name].is_cuda:
            tight = ns_dtype == "float32"
            rtol, atol = (1e-4, 1e-5) if tight else (2e-2, 1e-3)
            torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=f"{what}: '{name}'")
        else:
            gap = (got[name] - want[name]).abs().max()
            assert torch.equal(got[name], want[name]), f"{what}: '{name}' differs by {gap}"


def _fsdp_llama(device: torch.device) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    import newcompute
    import newcompute_normuon.plugin as plugin

    registry = newcompute.Registry()
    registry.register(plugin, name="normuon")
    config = LlamaConfig(vocab_size=48, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    settings = newcompute.OptimizerSettings(lr=3e-3, weight_decay=0.1)
    tokens = torch.randint(0, 48, (2, 10), generator=torch.Generator().manual_seed(3)).to(device)

    def train(model: torch.nn.Module, mode: str) -> None:
        if mode == "single":
            groups = build_groups(NorMuonConfig(), newcompute.classify_parameters(model), settings)
            optimizer = NorMuonAdamW(groups, distributed="off")
        else:
            optimizer = newcompute.build_optimizer(model, settings, registry=registry)
        for _ in range(STEPS):
            model(input_ids=tokens, labels=tokens).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        assert optimizer.mode == mode

    torch.manual_seed(0)
    single = LlamaForCausalLM(config)
    sharded = LlamaForCausalLM(config)
    sharded.load_state_dict(single.state_dict())
    single.to(device)
    sharded.to(device)
    newcompute.apply(single, ["normuon"], registry=registry)
    newcompute.apply(sharded, ["normuon"], registry=registry)
    mesh = init_device_mesh(device.type, (WORLD,))
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    train(single, "single")
    train(sharded, "sharded")
    ns_dtype = NorMuonConfig().ns_dtype
    for (name, want), got in zip(single.named_parameters(), sharded.parameters(), strict=True):
        _assert_same({name: got.full_tensor().detach()}, {name: want.detach()}, "FSDP2", ns_dtype)


def _distributed_steps_match(rank: int, device: torch.device) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    if device.type == "cpu":
        # the fused kernels, imported only when first used, then run in Triton's CPU interpreter
        os.environ["TRITON_INTERPRET"] = "1"
    mesh = init_device_mesh(device.type, (WORLD,))
    params = {name: tensor.to(device) for name, tensor in _tensors(0).items()}
    for ns_dtype in ("float32", "bfloat16"):
        single = _run(params, "off", ns_dtype, "single")
        _assert_same(_run(params, "auto", ns_dtype, "replicated"), single, f"replicated {ns_dtype}", ns_dtype)
        _assert_same(
            _run(params, "auto", ns_dtype, "sharded", shard=lambda t: distribute_tensor(t, mesh, [Shard(0)])),
            single,
            f"sharded {ns_dtype}",
            ns_dtype,
        )
    if importlib.util.find_spec("triton") is not None:
        # a rank advances the momenta of the matrices it does not stack on its own: the fused kernels must too
        single = _run(params, "off", "float32", "single")
        replicated = _run(params, "auto", "float32", "replicated", elementwise="triton")
        _assert_same(replicated, single, "replicated, fused kernels", "float32")
    _fsdp_llama(device)


@pytest.mark.parametrize("backend", backend_params(WORLD))
def test_distributed_step_equals_single_process(backend: str) -> None:
    run_ranks(_distributed_steps_match, backend, WORLD)
