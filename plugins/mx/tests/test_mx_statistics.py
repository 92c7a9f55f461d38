"""MX and FP8 statistics against hand-built tensors: a known saturated and underflowing fraction, known exponents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import newcompute as nc
from newcompute_mx import plugin
from newcompute_mx.fp8_scaling import AmaxHistory, TensorKind
from newcompute_mx.layer import QuantizedLinear
from newcompute_mx.quantizers import FP8Quantizer, MXQuantizer
from newcompute_mx.statistics import ROLES

E4M3_EVERYWHERE = {role: "e4m3" for role in ROLES}
KERNEL_CHECKS = Path(__file__).with_name("mx_statistics_checks.py")


def _by_name(report: dict[nc.Statistic, torch.Tensor]) -> dict[str, float | list[float]]:
    return {stat.name: value.tolist() if stat.is_vector else value.item() for stat, value in report.items()}


def _block() -> torch.Tensor:
    """One 32-element block: amax 480 gives E4M3 (emax 8) the exponent 8 − 8 = 0, i.e. scale 1."""
    values = torch.full((32,), 3.0)
    values[:4] = torch.tensor([480.0, -460.0, 450.0, 449.0])  # beyond 448, E4M3's largest value: clamped
    values[4:12] = 1e-4  # below half of E4M3's smallest subnormal 2⁻⁹: rounds to zero
    values[12] = 0.0  # zero is not an underflow
    return values.reshape(1, 32)


def test_mx_saturation_underflow_and_exponents_of_a_hand_built_block() -> None:
    quantizer = MXQuantizer(E4M3_EVERYWHERE, 32, "floor")
    x = _block()
    with nc.collect_statistics():
        quantizer.pairs([(TensorKind.INPUT, x, True, False)], torch.float32)
    stats = _by_name(plugin.newcompute_statistics(module=QuantizedLinear(torch.nn.Linear(32, 1), quantizer)))
    assert stats["fwd_input_saturation"] == pytest.approx(4 / 32)
    assert stats["fwd_input_underflow"] == pytest.approx(8 / 32)
    assert stats["fwd_input_exponent_min"] == 0 and stats["fwd_input_exponent_max"] == 0
    assert "wgrad_input_saturation" not in stats  # never measured: no weight gradient was asked for


def test_mx_exponents_span_blocks_of_different_magnitude_and_all_zero_blocks_have_none() -> None:
    quantizer = MXQuantizer(E4M3_EVERYWHERE, 32, "floor")
    x = torch.cat([torch.full((32,), 2.0**10), torch.zeros(32), torch.full((32,), 2.0**-3)]).reshape(1, 96)
    with nc.collect_statistics():
        requests = [(TensorKind.INPUT, x, True, False), (TensorKind.WEIGHT, torch.zeros(2, 32), True, False)]
        quantizer.pairs(requests, torch.float32)
    stats = _by_name(plugin.newcompute_statistics(module=QuantizedLinear(torch.nn.Linear(96, 1), quantizer)))
    # floor(log2 amax) − emax: 10 − 8 = 2 and −3 − 8 = −11; the zero block has no exponent.
    assert (stats["fwd_input_exponent_min"], stats["fwd_input_exponent_max"]) == (-11, 2)
    assert (stats["fwd_weight_exponent_min"], stats["fwd_weight_exponent_max"]) == (0, 0)  # measured, no value held
    assert "wgrad_input_exponent_min" not in stats


def test_mx_exponent_histogram_counts_each_block_by_its_exponent() -> None:
    quantizer = MXQuantizer(E4M3_EVERYWHERE, 32, "floor")
    blocks = [2.0**10, 2.0**10, 2.0**-3, 0.0]  # exponents 2, 2, −11; the all-zero block holds no value
    x = torch.cat([torch.full((32,), v) for v in blocks]).reshape(1, 128)
    with nc.collect_statistics():
        quantizer.pairs([(TensorKind.INPUT, x, True, False)], torch.float32)
        quantizer.pairs([(TensorKind.INPUT, x[:, :32] * 2, True, False)], torch.float32)  # one more, exponent 3
    report = plugin.newcompute_statistics(module=QuantizedLinear(torch.nn.Linear(128, 1), quantizer))
    stat = next(s for s in report if s.name == "fwd_input_exponent_histogram")
    assert stat.is_histogram and stat.bins[0] == -127 and stat.bins[-1] == 127 and len(stat.bins) == 255
    counts = dict(zip(stat.bins, report[stat].tolist()))
    assert {e: c for e, c in counts.items() if c} == {-11.0: 1.0, 2.0: 2.0, 3.0: 1.0}
    assert report[stat].dtype == torch.float64


def test_fp8_delayed_scaling_reports_its_amax_history_newest_first() -> None:
    history = AmaxHistory("delayed", 20, "max", 0, False).train()
    quantizer = FP8Quantizer(E4M3_EVERYWHERE, history)
    for amax in (5.0, 7.0, 3.0):
        quantizer.pair(TensorKind.INPUT, torch.tensor([[amax, -1.0]]), torch.float32, True, False)
    with nc.collect_statistics():
        quantizer.pair(TensorKind.INPUT, torch.tensor([[-2.0, 1.0]]), torch.float32, True, False)
    # A later, unmeasured step moves the window on; the report is read after it, as training telemetry is.
    quantizer.pair(TensorKind.INPUT, torch.tensor([[9.0, 1.0]]), torch.float32, True, False)
    assert history.amax_history[TensorKind.INPUT, 0].item() == 9.0
    stats = _by_name(plugin.newcompute_statistics(module=QuantizedLinear(torch.nn.Linear(2, 1), quantizer)))
    assert stats["input_amax_history"] == [2.0, 3.0, 7.0, 5.0] + [0.0] * 12  # 16 of the 20 entries shown
    assert "weight_amax_history" not in stats  # the weight was never quantized here


def test_fp8_current_scaling_has_no_amax_history() -> None:
    quantizer = FP8Quantizer(E4M3_EVERYWHERE, AmaxHistory("current", 1, "max", 0, False))
    with nc.collect_statistics():
        quantizer.pair(TensorKind.INPUT, torch.tensor([[4.0]]), torch.float32, True, False)
    stats = _by_name(plugin.newcompute_statistics(module=QuantizedLinear(torch.nn.Linear(1, 1), quantizer)))
    assert "input_amax" in stats and "input_amax_history" not in stats


def test_fp8_delayed_scaling_saturates_what_outgrew_the_history() -> None:
    history = AmaxHistory("delayed", 4, "max", 0, False).eval()
    history.amax_history[TensorKind.INPUT, 0] = 100.0  # scale 448 / 100: values beyond 100 saturate
    quantizer = FP8Quantizer(E4M3_EVERYWHERE, history)
    x = torch.tensor([[200.0, -150.0, 101.0, 99.0, 1.0, -3.0, 0.0, 50.0]])
    with nc.collect_statistics():
        quantizer.pair(TensorKind.INPUT, x, torch.float32, True, False)
    stats = _by_name(plugin.newcompute_statistics(module=QuantizedLinear(torch.nn.Linear(8, 1), quantizer)))
    assert stats["fwd_input_saturation"] == pytest.approx(3 / 8)
    assert stats["fwd_input_underflow"] == 0
    assert stats["input_amax"] == 200.0


def test_a_training_step_measures_the_backward_roles_and_off_measures_nothing() -> None:
    from newcompute.testing import build_tiny, sample_batch

    model = build_tiny()
    nc.apply(model, ["mxfp8"])
    tokens = sample_batch()
    model(tokens, labels=tokens).loss.backward()
    assert nc.read_statistics(model) == []  # nothing measured while collection was off
    with nc.collect_statistics():
        model(tokens, labels=tokens).loss.backward()
    stats = nc.read_statistics(model)
    names = {s.statistic.name for s in stats}
    assert {"dgrad_grad_output_underflow", "wgrad_input_exponent_max", "fwd_weight_saturation"} <= names
    fractions = [s.value for s in stats if s.statistic.unit == "fraction"]
    assert fractions and all(0.0 <= v <= 1.0 for v in fractions)
    exponents = [s.value for s in stats if s.statistic.name == "fwd_weight_exponent_max"]
    assert exponents and all(-20 < v < 0 for v in exponents)  # small random weights: blocks scaled down


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "int8"])
@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_rates_agree_with_the_reference_quantizer(fmt: str, mode: str) -> None:
    from newcompute_mx.formats import FORMATS
    from newcompute_mx.reference import SCALE_BIAS, mx_quantize

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(6, 96, generator=generator) * torch.exp2(torch.randint(-20, 20, (6, 96), generator=generator).float())
    x[0, :5] = 0.0
    x[1, 32:64] = 0.0  # a block of zeros: no exponent in the histogram
    quantizer = MXQuantizer({role: fmt for role in ROLES}, 32, mode)
    with nc.collect_statistics():
        quantizer.pairs([(TensorKind.INPUT, x, True, False)], torch.float32)
    reference = mx_quantize(x, FORMATS[fmt], 32, -1, mode)
    scales = torch.exp2(reference.scale_codes.double() - SCALE_BIAS).repeat_interleave(32, dim=-1)
    saturated = (x.double().abs() / scales > FORMATS[fmt].max_normal).sum().item()
    underflow = ((x != 0) & (reference.elements == 0)).sum().item()
    sums = quantizer.telemetry
    assert sums["fwd_input_saturated"].item() == saturated
    assert sums["fwd_input_underflow"].item() == underflow
    assert underflow > 0  # the test data reaches the subnormal range of every format
    # the histogram against the reference's E8M0 codes of the blocks that hold a non-zero value
    holding = x.reshape(6, 3, 32).abs().amax(dim=-1) > 0
    exponents = reference.scale_codes.long()[holding] - SCALE_BIAS
    expected = torch.bincount(exponents + 127, minlength=255).double()
    assert torch.equal(sums.histogram("fwd_input_exp_hist"), expected)
    assert expected.sum().item() == 6 * 3 - 1  # one block of zeros is left out


def _sums_of(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A training-like observation of ``x`` on its device: both axes of an input, every 4th row or column."""
    quantizer = MXQuantizer(E4M3_EVERYWHERE, 32, mode).to(x.device)  # type: ignore[arg-type]
    with nc.collect_statistics(row_stride=4):
        quantizer.pairs([(TensorKind.INPUT, x, True, True), (TensorKind.WEIGHT, x[0], True, True)], x.dtype)
    return quantizer.telemetry.sums.cpu(), quantizer.telemetry.counts.cpu()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_the_statistics_on_cuda_equal_the_cpu_ones(mode: str) -> None:
    generator = torch.Generator().manual_seed(5)
    spread = torch.randint(-30, 30, (2, 64, 256), generator=generator).float()
    x = (torch.randn(2, 64, 256, generator=generator) * torch.exp2(spread)).to(torch.bfloat16)
    x[0, 3, 17] = float("nan")
    got, want = _sums_of(x.cuda(), mode), _sums_of(x, mode)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert want[1].sum() > 0 and want[0][torch.isfinite(want[0])].sum() > 0  # unmeasured bounds are ±inf


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("scaling", ["current", "delayed"])
def test_the_fp8_statistics_on_cuda_equal_the_cpu_ones(scaling: str) -> None:
    def sums_of(x: torch.Tensor) -> torch.Tensor:
        history = AmaxHistory(scaling, 4, "max", 0, False).train()  # type: ignore[arg-type]
        quantizer = FP8Quantizer(E4M3_EVERYWHERE, history).to(x.device)
        with nc.collect_statistics(row_stride=4):
            for _ in range(2):  # delayed scaling: the second call casts with the first call's amax
                quantizer.pair(TensorKind.INPUT, x * 1.5, x.dtype, True, True)
                quantizer.pair(TensorKind.WEIGHT, x[0], x.dtype, True, True)
        sums = quantizer.telemetry
        return torch.cat([sums.slots("fwd_input_saturated", 3 * len(ROLES)), sums.slots("input_amax", 3)]).cpu()

    generator = torch.Generator().manual_seed(6)
    spread = torch.randint(-12, 12, (2, 64, 1), generator=generator).float()
    x = (torch.randn(2, 64, 256, generator=generator) * torch.exp2(spread)).to(torch.bfloat16)
    got, want = sums_of(x.cuda()), sums_of(x)
    assert torch.equal(got, want)
    assert want[1] > 0 and want[2] == 2 * x[:, ::4].numel() and want[-3] > 0  # fwd_input underflow, seen; input amax


def test_the_statistics_kernel_equals_the_pytorch_path_under_the_interpreter() -> None:
    pytest.importorskip("triton", reason="Triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(KERNEL_CHECKS)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "count for count" in result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "check", ["check_sampled_views", "check_layouts_and_dtypes", "check_edge_blocks", "check_scaled_casts"]
)
def test_the_statistics_kernel_equals_the_pytorch_path_on_cuda(check: str) -> None:
    pytest.importorskip("triton", reason="Triton is not installed")
    import mx_statistics_checks

    assert getattr(mx_statistics_checks, check)("cuda") == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_observation_replays_in_a_cuda_graph() -> None:
    """Captured once, replayed twice: the sums hold two observations, as two eager calls leave them."""
    from newcompute_mx import statistics
    from newcompute_mx.formats import FORMATS

    x = (torch.randn(512, 1024, device="cuda") * 3.0).to(torch.bfloat16)[:, ::4]
    eager = statistics.new_sums(torch.device("cuda"))
    for _ in range(2):
        statistics.observe_mx(eager, "fwd_input", x, -2, FORMATS["e4m3"], 32, "floor")
    graphed = statistics.new_sums(torch.device("cuda"))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        statistics.observe_mx(graphed, "fwd_input", x, -2, FORMATS["e4m3"], 32, "floor")
    graphed.reset()
    graph.replay()
    graph.replay()
    assert torch.equal(graphed.sums, eager.sums) and torch.equal(graphed.counts, eager.counts)
    assert eager["fwd_input_seen"].item() == 2 * x.numel()


def test_a_row_stride_measures_every_nth_row_of_activations_and_every_row_of_weights() -> None:
    """Rows 0 and 2 saturate 4 of 32; rows 1 and 3 do not: stride 2 sees only the saturating rows."""
    quantizer = MXQuantizer(E4M3_EVERYWHERE, 32, "floor")
    calm = torch.full((1, 32), 3.0)
    x = torch.cat([_block(), calm, _block(), calm])
    with nc.collect_statistics(row_stride=2):
        quantizer.pairs([(TensorKind.INPUT, x, True, True), (TensorKind.WEIGHT, x, True, False)], torch.float32)
    sums = quantizer.telemetry
    assert sums["fwd_input_seen"].item() == 64 and sums["fwd_input_saturated"].item() == 8
    assert sums["fwd_weight_seen"].item() == 128 and sums["fwd_weight_saturated"].item() == 8
    # Blocks along the rows (the weight-gradient GEMM) stay whole: every other column, all 4 rows of each.
    assert sums["wgrad_input_seen"].item() == 4 * 16
