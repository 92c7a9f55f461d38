"""On a CUDA GPU: the fast bfloat16 step (eager and compiled, cuBLAS and Triton products, fused
elementwise kernels and two streams) against the float32 reference, the Triton kernels in bfloat16,
and the plugin's CUDA defaults."""

from __future__ import annotations

import warnings

import pytest
import torch
from normuon_helpers import BF16_RELATIVE_TOLERANCE, normuon_group, registry, relative_error

import newcompute
from newcompute_normuon import NorMuonAdamW, ReferenceNorMuon

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SHAPES = {"q": (256, 256), "k": (256, 256), "o": (256, 256), "up": (704, 256), "down": (256, 704), "kv": (64, 256)}


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(*s, generator=generator) for n, s in SHAPES.items()}
    tensors["c_attn"] = torch.randn(256, 768, generator=generator) * 0.02
    return {n: t.cuda() for n, t in tensors.items()}


def _groups(params: dict[str, torch.Tensor], ns_dtype: str) -> list[dict]:
    return [
        normuon_group([params[n] for n in SHAPES], ns_dtype=ns_dtype, weight_decay=0.1),
        normuon_group([params["c_attn"]], ns_dtype=ns_dtype, transposed=True, splits=3, coefficients="polar_express"),
    ]


def _updates(make, ns_dtype: str, steps: int = 3) -> dict[str, torch.Tensor]:
    return _all_updates(make, ns_dtype, [1.0] * steps)[-1]


def _all_updates(make, ns_dtype: str, lr_factors: list[float]) -> list[dict[str, torch.Tensor]]:
    """Every step's update; before step k every group's lr is multiplied by ``lr_factors[k]``."""
    params = {n: torch.nn.Parameter(t) for n, t in _tensors(0).items()}
    optimizer = make(_groups(params, ns_dtype))
    groups = optimizer.param_groups if isinstance(optimizer, torch.optim.Optimizer) else optimizer.groups
    updates = []
    for step, factor in enumerate(lr_factors):
        before = {n: p.detach().clone() for n, p in params.items()}
        for name, grad in _tensors(10 + step).items():
            params[name].grad = grad
        for group in groups:
            group["lr"] *= factor
        optimizer.step()
        updates.append({n: params[n].detach() - before[n] for n in params})
    return updates


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return _updates(ReferenceNorMuon, "float32")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("ns_kernel", ["torch", "triton"])
def test_bfloat16_step_matches_the_float32_reference(reference, compiled: bool, ns_kernel: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compile failure falls back with a RuntimeWarning
        fast = _updates(lambda g: NorMuonAdamW(g, compile=compiled, ns_kernel=ns_kernel), "bfloat16")
    for name in fast:
        assert relative_error(fast[name], reference[name]) < BF16_RELATIVE_TOLERANCE, name


LR_FACTORS = [1.0, 0.5, 1.7, 0.3, 1.1]


def test_cuda_default_step_matches_the_reference_while_the_lr_changes() -> None:
    """Fused kernels and the side stream (the defaults with Triton products): every step's update."""
    want = _all_updates(ReferenceNorMuon, "float32", LR_FACTORS)
    got = _all_updates(lambda g: NorMuonAdamW(g, ns_kernel="triton"), "bfloat16", LR_FACTORS)
    for step, (fast, reference) in enumerate(zip(got, want)):
        for name in fast:
            assert relative_error(fast[name], reference[name]) < BF16_RELATIVE_TOLERANCE, (step, name)


@pytest.mark.parametrize(
    ("ns_dtype", "ns_kernel", "tolerance"),
    [("float32", "torch", 1e-4), ("bfloat16", "triton", BF16_RELATIVE_TOLERANCE)],
)
def test_fused_and_overlapped_step_equals_the_torch_path(ns_dtype: str, ns_kernel: str, tolerance: float) -> None:
    """Same arithmetic on the same device: only the fused multiply-adds nvcc and Triton choose may differ.

    In float32 the products are cuBLAS's (the Triton kernel's float32 ``dot`` is TF32), so the
    comparison sees the elementwise passes. It runs on a non-default stream, so the step must order
    its own streams against the caller's.
    """
    torch.cuda.set_stream(torch.cuda.Stream())
    try:
        fast = _all_updates(lambda g: NorMuonAdamW(g, ns_kernel=ns_kernel, overlap=True), ns_dtype, LR_FACTORS)
        plain = _all_updates(
            lambda g: NorMuonAdamW(g, ns_kernel=ns_kernel, elementwise="torch", overlap=False), ns_dtype, LR_FACTORS
        )
    finally:
        torch.cuda.current_stream().synchronize()
        torch.cuda.set_stream(torch.cuda.default_stream())
    for step, (a, b) in enumerate(zip(fast, plain)):
        for name in a:
            assert relative_error(a[name], b[name]) < tolerance, (step, name)


def test_adamw_beside_newton_schulz_matches_torch_adamw() -> None:
    """The AdamW groups run on the side stream while the matrices are orthogonalised."""
    torch.manual_seed(0)
    matrix = torch.nn.Parameter(torch.randn(512, 512, device="cuda"))
    ours = [torch.nn.Parameter(torch.randn(*shape, device="cuda")) for shape in ((4096, 256), (256,))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    options = {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "eps": 1e-6}
    optimizer = NorMuonAdamW(
        [normuon_group([matrix], ns_dtype="bfloat16"), {"optimizer": "adamw", "params": ours, **options}],
        ns_kernel="triton",
    )
    torch_adamw = torch.optim.AdamW(theirs, fused=True, **options)
    for _ in range(3):
        matrix.grad = torch.randn_like(matrix)
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        optimizer.step()
        torch_adamw.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("tall", [False, True], ids=["wide", "tall"])
def test_fused_kernels_round_bfloat16_like_torch(tall: bool) -> None:
    """bfloat16 momentum and stack round like the foreach path; the bfloat16 update is within two roundings."""
    from newcompute_normuon import ops
    from newcompute_normuon.kernels import elementwise
    from newcompute_normuon.layout import Block, block_view

    torch.manual_seed(0)
    shape = (700, 300) if tall else (300, 700)

    def views(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [block_view(t, False, Block(0, shape[0]), tall) for t in tensors]

    grads = [torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    start = [torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    want_momenta, got_momenta = [m.clone() for m in start], [m.clone() for m in start]
    want = torch.empty(3, 300, 700, device="cuda", dtype=torch.bfloat16)
    got = torch.empty_like(want)
    ops.advance_momenta(want_momenta, grads, 0.95)
    ops.stack_sources(views(grads), views(want_momenta), want, 0.95, True)
    elementwise.momentum_into_stack(views(grads), views(got_momenta), got, 0.95, True)
    for a, b in [*zip(got_momenta, want_momenta), (got, want)]:
        torch.testing.assert_close(a.float(), b.float(), rtol=2**-7, atol=0)

    weights = [torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    scales = torch.rand(3, 700 if tall else 300, device="cuda")
    neg_lr, decay = torch.tensor(-0.02, device="cuda"), torch.tensor(0.998, device="cuda")
    got_weights = [w.clone() for w in weights]
    elementwise.apply_update(views(got_weights), want, scales, tall, neg_lr, decay)
    # Against the update computed in float32: the kernel rounds the decayed weight and the result
    # to bfloat16, each rounding within 2⁻⁸ of the terms' magnitude.
    factors = ops.row_factor_view(scales * neg_lr, tall)
    for index, weight in enumerate(views(weights)):
        decayed, update = weight.float() * decay, want[index].float() * factors[index]
        exact, size = decayed + update, decayed.abs() + update.abs()
        got = views([got_weights[index]])[0].float()
        assert ((got - exact).abs() <= 2**-7 * size).all()
        assert (got - weight.float()).abs().mean() > 1e-3


def test_float32_step_matches_the_reference_tightly(reference) -> None:
    fast = _updates(NorMuonAdamW, "float32")
    for name in fast:
        assert relative_error(fast[name], reference[name]) < 1e-4, name


@pytest.mark.parametrize("shape", [(3, 200, 333), (2, 1536, 4096)])
def test_triton_symmetric_product_in_bfloat16(shape: tuple[int, int, int]) -> None:
    from newcompute_normuon.kernels.symmetric import symmetric_product

    torch.manual_seed(0)
    y = (torch.randn(*shape, device="cuda") / shape[-1] ** 0.5).bfloat16()
    want = y.float() @ y.float().mT
    gram = symmetric_product(y)
    assert relative_error(gram.float(), gram.mT.float()) < 1e-3
    assert relative_error(gram.float(), want) < 1e-2
    poly = symmetric_product(gram, alpha=2.0, addend=gram, beta=-3.0, diagonal=3.4)
    eye = torch.eye(shape[1], device="cuda")
    assert relative_error(poly.float(), 2 * want @ want - 3 * want + 3.4 * eye) < 2e-2


def test_plugin_uses_triton_eagerly_on_cuda() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).cuda()
    reg = registry()
    newcompute.apply(model, ["normuon"], registry=reg)
    optimizer = newcompute.build_optimizer(model, newcompute.OptimizerSettings(lr=3e-3), registry=reg)
    assert optimizer.ops.symmetric and not optimizer.ops.compiled
    assert optimizer.ops.fuses(torch.device("cuda")) and not optimizer.overlap
    tokens = torch.randint(0, 128, (4, 32), device="cuda")
    losses = []
    for _ in range(8):
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
