"""Per-tensor FP8: the GEMM semantics, delayed-scaling history, and amax agreement across ranks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from newcompute.testing import backend_params, run_ranks
from newcompute_mx import reference
from newcompute_mx.config import ROLES
from newcompute_mx.formats import FORMATS
from newcompute_mx.fp8_scaling import AmaxHistory, TensorKind
from newcompute_mx.layer import QuantizedLinear
from newcompute_mx.quantizers import FP8Quantizer

HYBRID = {role: "e5m2" if "grad_output" in role else "e4m3" for role in ROLES}
E4M3 = FORMATS["e4m3"]


def history(scaling: str = "delayed", length: int = 4, compute: str = "max") -> AmaxHistory:
    return AmaxHistory(scaling, length, compute, margin=0, reduce=True)  # type: ignore[arg-type]


def test_delayed_scaling_uses_earlier_steps_and_rolls_the_window() -> None:
    amaxes = history()
    tensor = lambda amax: torch.tensor([amax, -0.5])  # noqa: E731
    # Step 1: no history yet, so this tensor's own amax 2 gives 448/2.
    assert amaxes.scales(TensorKind.INPUT, tensor(2.0), [E4M3])["e4m3"].item() == 224.0
    # Step 2: amax 4, but delayed scaling still uses the window's max (2): TE's one-step lag.
    assert amaxes.scales(TensorKind.INPUT, tensor(4.0), [E4M3])["e4m3"].item() == 224.0
    # Step 3: the window now holds [4, 2]: 448/4.
    assert amaxes.scales(TensorKind.INPUT, tensor(1.0), [E4M3])["e4m3"].item() == 112.0
    assert amaxes.amax_history[TensorKind.INPUT].tolist() == [1.0, 4.0, 2.0, 0.0]
    assert amaxes.amax_history[TensorKind.WEIGHT].tolist() == [0.0, 0.0, 0.0, 0.0]
    for _ in range(3):
        amaxes.scales(TensorKind.INPUT, tensor(0.5), [E4M3])
    assert amaxes.amax_history[TensorKind.INPUT].tolist() == [0.5, 0.5, 0.5, 1.0]


def test_most_recent_and_current_scaling() -> None:
    recent = history(compute="most_recent")
    recent.scales(TensorKind.WEIGHT, torch.tensor([8.0]), [E4M3])
    recent.scales(TensorKind.WEIGHT, torch.tensor([2.0]), [E4M3])
    assert recent.scales(TensorKind.WEIGHT, torch.tensor([1.0]), [E4M3])["e4m3"].item() == 224.0  # newest: 2
    current = history(scaling="current", length=1)
    assert current.scales(TensorKind.WEIGHT, torch.tensor([8.0]), [E4M3])["e4m3"].item() == 56.0
    assert current.scales(TensorKind.WEIGHT, torch.tensor([2.0]), [E4M3])["e4m3"].item() == 224.0


def test_evaluation_does_not_record_amax() -> None:
    amaxes = history()
    amaxes.eval()
    amaxes.scales(TensorKind.INPUT, torch.tensor([3.0]), [E4M3])
    assert amaxes.amax_history.abs().sum().item() == 0.0


def test_fp8_linear_is_scaled_gemms_with_decode_after() -> None:
    torch.manual_seed(0)
    source = nn.Linear(64, 48, bias=False)
    layer = QuantizedLinear(source, FP8Quantizer(HYBRID, history(scaling="current", length=1)))
    x = torch.randn(10, 64, requires_grad=True)
    grad = torch.randn(10, 48)
    out = layer(x)
    out.backward(grad)

    def cast(t: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
        scale = reference.tensor_scale(t.abs().amax(), FORMATS[fmt])
        return reference.scaled_quantize(t, FORMATS[fmt], scale), reference.inverse_scale(scale)

    qx, ix = cast(x.detach(), "e4m3")
    qw, iw = cast(source.weight.detach(), "e4m3")
    qg, ig = cast(grad, "e5m2")
    assert torch.equal(out, torch.matmul(qx, qw.transpose(-1, -2)) * (ix * iw))
    assert torch.equal(x.grad, torch.matmul(qg, qw) * (ig * iw))
    assert torch.equal(source.weight.grad, torch.matmul(qg.transpose(-1, -2), qx) * (ig * ix))


def _rank_records_amax(rank: int, device: torch.device) -> list[float]:
    amaxes = history().to(device)
    local = torch.tensor([1.0 + 3.0 * rank, -0.25], device=device)  # rank 0: amax 1, rank 1: amax 4
    scale = amaxes.scales(TensorKind.GRAD_OUTPUT, local, [FORMATS["e5m2"]])["e5m2"]
    return [scale.item(), *amaxes.amax_history[TensorKind.GRAD_OUTPUT, :2].tolist()]


@pytest.mark.parametrize("backend", backend_params())
def test_ranks_agree_on_amax_and_scale(backend: str) -> None:
    # Both ranks recorded the global amax 4 and scaled with 57344/4, not their local amax.
    assert run_ranks(_rank_records_amax, backend) == [[14336.0, 4.0, 0.0], [14336.0, 4.0, 0.0]]
