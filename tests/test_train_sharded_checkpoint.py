"""An FSDP2 checkpoint, written as accelerate writes it, resumes in one process that does not shard.

Two gloo processes shard a tiny Llama with ``fully_shard`` (FP8 amax
buffers, NorMuon with sharded momenta), train two steps and save model and
optimizer with DCP under accelerate's folder names and keys. One plain
process then loads them; weights, buffers and optimizer state must equal
the gathered originals.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

import newcompute
from newcompute.errors import ConfigError
from newcompute.testing import build_tiny, run_ranks
from newcompute.train.sharded_checkpoint import MODEL_SHARDS, OPTIMIZER_SHARDS, is_sharded, load_sharded

PARADIGMS = ["fp8", "normuon"]
SETTINGS = newcompute.OptimizerSettings(lr=1e-2, weight_decay=0.1)


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = build_tiny("tiny", seed=0)
    newcompute.apply(model, PARADIGMS)
    return model, newcompute.build_optimizer(model, SETTINGS)


def _flat(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a (name-keyed) optimizer state dict, under one dotted name."""
    entries = state["state"].items()
    return {f"{name}.{key}": torch.as_tensor(value) for name, entry in entries for key, value in entry.items()}


def _train_sharded_and_save(rank: int, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = build_tiny("tiny", seed=0)
    newcompute.apply(model, PARADIGMS)
    mesh = init_device_mesh("cpu", (2,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = newcompute.build_optimizer(model, SETTINGS)
    tokens = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(rank))
    for _ in range(2):
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = Path(os.environ["SHARDED_CHECKPOINT"])
    dcp.save({"model": model.state_dict()}, checkpoint_id=folder / MODEL_SHARDS)
    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=folder / OPTIMIZER_SHARDS)
    whole = StateDictOptions(full_state_dict=True)
    weights = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}
    return {"weights": weights, "optimizer": _flat(get_optimizer_state_dict(model, optimizer, options=whole))}


def test_a_sharded_checkpoint_fills_an_unsharded_model_and_optimizer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARDED_CHECKPOINT", str(tmp_path))
    saved = run_ranks(_train_sharded_and_save)[0]
    assert is_sharded(tmp_path)
    model, optimizer = _model_and_optimizer()
    load_sharded(tmp_path, model, optimizer)
    weights = model.state_dict()
    assert set(weights) == set(saved["weights"]) and any("amax_history" in name for name in weights)
    for name, want in saved["weights"].items():
        assert torch.equal(weights[name], want), name
    state = _flat(get_optimizer_state_dict(model, optimizer))
    assert set(state) == set(saved["optimizer"]) and any("momentum" in name for name in state)
    for name, want in saved["optimizer"].items():
        assert torch.equal(state[name], want), name


def test_an_incomplete_sharded_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / MODEL_SHARDS).mkdir()
    model, optimizer = _model_and_optimizer()
    expected = f"{tmp_path} is not a complete FSDP2 checkpoint: {OPTIMIZER_SHARDS} is missing"
    with pytest.raises(ConfigError, match=expected):
        load_sharded(tmp_path, model, optimizer)
    assert not is_sharded(tmp_path / "elsewhere")
