"""NorMuonAdamW as a torch optimizer: equals the reference and torch's AdamW, resumes, schedules."""

from __future__ import annotations

import io

import pytest
import torch
from normuon_helpers import BF16_RELATIVE_TOLERANCE, normuon_group, relative_error

from newcompute import ConfigError
from newcompute_normuon import NorMuonAdamW, ReferenceNorMuon

SHAPES = {"q": (16, 16), "k": (16, 16), "v": (16, 16), "up": (40, 16), "down": (16, 40), "conv": (6, 4, 3)}


def _weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn(*shape, generator=generator) for name, shape in SHAPES.items()}
    tensors["c_attn"] = torch.randn(16, 48, generator=generator)
    tensors["gate_up"] = torch.randn(24, 16, generator=generator)
    return tensors


def _groups(params: dict[str, torch.Tensor], **options) -> list[dict]:
    return [
        normuon_group([params[n] for n in SHAPES], weight_decay=0.1, **options),
        normuon_group([params["c_attn"]], transposed=True, splits=3, **options),
        normuon_group([params["gate_up"]], splits=(16, 8), momentum=0.9, beta2=0.99, **options),
    ]


def _train(make, options: dict, steps: int = 3) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameters and their last update after ``steps`` steps on fixed random gradients."""
    params = {n: torch.nn.Parameter(t) for n, t in _weights(0).items()}
    optimizer = make(_groups(params, **options))
    for step in range(steps):
        before = {n: p.detach().clone() for n, p in params.items()}
        for name, grad in _weights(10 + step).items():
            params[name].grad = grad
        optimizer.step()
    return {n: p.detach() for n, p in params.items()}, {n: params[n].detach() - before[n] for n in params}


@pytest.mark.parametrize(
    "options",
    [{}, {"nesterov": False}, {"coefficients": "polar_express"}, {"ns_steps": 3}],
    ids=["default", "no-nesterov", "polar-express", "3-steps"],
)
def test_fast_step_equals_reference_in_float32(options: dict) -> None:
    fast, _ = _train(NorMuonAdamW, options)
    reference, _ = _train(ReferenceNorMuon, options)
    for name in fast:
        assert torch.allclose(fast[name], reference[name], rtol=0, atol=2e-5), name


def test_bfloat16_updates_within_tolerance_of_the_float32_reference() -> None:
    _, fast = _train(NorMuonAdamW, {"ns_dtype": "bfloat16"})
    _, reference = _train(ReferenceNorMuon, {})
    for name in fast:
        assert relative_error(fast[name], reference[name]) < BF16_RELATIVE_TOLERANCE, name


def test_adamw_groups_match_torch_adamw() -> None:
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    options = {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "eps": 1e-6}
    optimizer = NorMuonAdamW([{"optimizer": "adamw", "params": ours, **options}])
    torch_adamw = torch.optim.AdamW(theirs, foreach=False, **options)
    for _ in range(4):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        optimizer.step()
        torch_adamw.step()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 11))


def _optimizer(model: torch.nn.Module) -> NorMuonAdamW:
    embed, up, _, head = model
    return NorMuonAdamW(
        [
            normuon_group([("1.weight", up.weight)], ns_dtype="bfloat16", weight_decay=0.01),
            {"optimizer": "adamw", "lr": 3e-3, "params": [("0.weight", embed.weight), ("1.bias", up.bias)]},
            {
                "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1,
                "params": [("3.weight", head.weight), ("3.bias", head.bias)],
            },
        ]
    )


def _train_model(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        tokens = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(step))
        logits = model(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_state_dict_round_trip_resumes_bit_identically() -> None:
    model = _tiny_model()
    optimizer = _optimizer(model)
    _train_model(model, optimizer, range(3))
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    _train_model(model, optimizer, range(3, 6))

    saved.seek(0)
    checkpoint = torch.load(saved, weights_only=True)
    resumed = _tiny_model()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = _optimizer(resumed)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    _train_model(resumed, resumed_optimizer, range(3, 6))
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert resumed_optimizer.param_groups[0]["name"] == optimizer.param_groups[0]["name"]


def test_second_moment_stays_float32_for_bfloat16_weights() -> None:
    weight = torch.nn.Parameter(torch.randn(8, 8, dtype=torch.bfloat16))
    weight.grad = torch.randn(8, 8, dtype=torch.bfloat16)
    optimizer = NorMuonAdamW([normuon_group([weight], ns_dtype="bfloat16")])
    optimizer.step()
    moment = optimizer.state[weight]["second_moment"].clone()
    reloaded = NorMuonAdamW([normuon_group([weight], ns_dtype="bfloat16")])
    reloaded.load_state_dict(optimizer.state_dict())
    assert reloaded.state[weight]["second_moment"].dtype == torch.float32
    assert torch.equal(reloaded.state[weight]["second_moment"], moment)
    assert reloaded.state[weight]["momentum_buffer"].dtype == torch.bfloat16


def test_lr_schedulers_drive_both_kinds_of_group() -> None:
    """A scheduler halving every lr gives exactly the optimizer built with half the lrs."""

    def run(lr_factor: float, schedule: bool) -> list[torch.Tensor]:
        model = _tiny_model()
        optimizer = _optimizer(model)
        for group in optimizer.param_groups:
            group["lr"] *= lr_factor
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5) if schedule else None
        _train_model(model, optimizer, range(2))
        assert scheduler is None or optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.02)
        return [p.detach() for p in model.parameters()]

    for a, b in zip(run(1.0, schedule=True), run(0.5, schedule=False)):
        assert torch.equal(a, b)


def test_hf_cosine_schedule_reaches_the_groups() -> None:
    from transformers import get_cosine_schedule_with_warmup

    model = _tiny_model()
    optimizer = _optimizer(model)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0, 0.0]
    _train_model(model, optimizer, range(1))
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 1.5e-3, 1.5e-3])


def test_parameters_without_gradients_are_left_alone() -> None:
    used, unused = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4, 4))
    before = unused.detach().clone()
    optimizer = NorMuonAdamW([normuon_group([used, unused], weight_decay=0.5)])
    used.grad = torch.randn(4, 4)
    optimizer.step()
    assert torch.equal(unused, before) and unused not in optimizer.state
    assert optimizer.mode == "single"


def _ones(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(*shape))


def _channels_last(*shape: int) -> torch.nn.Parameter:
    """A conv weight whose ``flatten(1)`` is a copy, so an update written through it would be lost."""
    return torch.nn.Parameter(torch.ones(*shape).to(memory_format=torch.channels_last))


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"optimizer": "sgd"}, "'sgd' is not 'normuon' or 'adamw'"),
        ({"optimizer": "normuon", "params": [("norm.weight", _ones(4))]}, "'norm.weight' has shape \\(4,\\)"),
        ({"optimizer": "normuon", "transposed": True, "params": [_ones(2, 2, 2)]}, "transposed ones exactly 2"),
        ({"optimizer": "normuon", "splits": 3, "params": [("qkv.weight", _ones(8, 4))]}, "8 output rows"),
        ({"optimizer": "normuon", "splits": (4, 2), "params": [_ones(8, 4)]}, "summing to its 8"),
        ({"optimizer": "normuon", "ns_dtype": "float16"}, "ns_dtype 'float16'"),
        ({"optimizer": "normuon", "coefficients": "cubic"}, "valid: 'quintic', 'polar_express'"),
        ({"optimizer": "normuon", "momentum": 1.0}, "must lie in \\[0, 1\\)"),
        ({"optimizer": "adamw", "betas": (0.9, 1.5)}, "must lie in \\[0, 1\\)"),
        (
            {"optimizer": "normuon", "params": [("conv.weight", _channels_last(8, 3, 2, 2))]},
            "'conv.weight' \\(shape \\(8, 3, 2, 2\\), strides \\(12, 1, 6, 3\\)\\) cannot be seen as an out × in matrix",
        ),
    ],
)
def test_bad_groups_are_rejected_by_name(group: dict, message: str) -> None:
    group = {"params": [torch.nn.Parameter(torch.ones(4, 4))]} | group
    with pytest.raises(ConfigError, match=message):
        NorMuonAdamW([group])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"elementwise": "cuda"}, "elementwise must be one of \\['auto', 'torch', 'triton'\\], got 'cuda'"),
        ({"ns_kernel": "cutlass"}, "ns_kernel must be 'torch' or 'triton', got 'cutlass'"),
        ({"distributed": "on"}, "distributed must be 'auto' or 'off', got 'on'"),
    ],
)
def test_bad_optimizer_options_are_rejected(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NorMuonAdamW([normuon_group([torch.nn.Parameter(torch.ones(4, 4))])], **options)


def test_rejected_group_is_not_kept() -> None:
    optimizer = NorMuonAdamW([{"optimizer": "adamw", "params": [torch.nn.Parameter(torch.ones(2))]}])
    with pytest.raises(ConfigError):
        optimizer.add_param_group({"optimizer": "normuon", "params": [torch.nn.Parameter(torch.ones(3))]})
    assert len(optimizer.param_groups) == 1


def test_a_failing_compile_falls_back_to_eager_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiler bug in the installed torch costs speed (one RuntimeWarning), not the run."""
    from torch._dynamo.exc import BackendCompilerFailed

    from newcompute_normuon import ops

    attempts = []

    def broken_compile(fn, **options):
        def run(*args, **kwargs):
            attempts.append(fn.__name__)
            raise BackendCompilerFailed(fn, AssertionError("inductor bug"), None)

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    row_scales = ops._compiled(ops.row_scales)
    ortho, moment = torch.randn(2, 3, 5), torch.zeros(2, 3)
    want = ops.row_scales(ortho, moment, 0.95, False, 1.0)
    with pytest.warns(RuntimeWarning, match="torch.compile failed on row_scales"):
        first = row_scales(ortho, moment, 0.95, False, 1.0)
    second = row_scales(ortho, moment, 0.95, False, 1.0)
    assert attempts == ["row_scales"]
    for got in (first, second):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
