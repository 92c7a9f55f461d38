"""The Triton kernel produces the reference's bits: on CPU through Triton's interpreter, and on a CUDA GPU."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from newcompute import MissingDependency
from newcompute_bitflip.formats import LAYOUTS
from newcompute_bitflip.reference import FlipSpec, flip_bits

CASES = [(1, 2, 0.0), (3, 5, 1.0), (16, 16, 30.0), (0, 7, 0.5), (9, 0, 0.0), (32, 1, 2.0)]

triton_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("triton") is None, reason="Triton is not installed"
)

INTERPRETED = textwrap.dedent(
    """
    import torch
    from newcompute_bitflip.formats import LAYOUTS
    from newcompute_bitflip.kernels import flip_bits_triton
    from newcompute_bitflip.reference import FlipSpec, flip_bits

    torch.manual_seed(0)
    for dtype, layout in LAYOUTS.items():
        for exp, frac, threshold in {cases}:
            x = torch.randn(1100).to(dtype) * 4
            call = torch.tensor(2**33 + 17)
            spec = FlipSpec(exp, frac, 2, 3, threshold, (99, 0x7ABCDEF1))
            want, want_keep = flip_bits(x, call, spec)
            got, got_keep = flip_bits_triton(x, call, spec)
            same = torch.equal(want.view(layout.int_dtype), got.view(layout.int_dtype))
            same_keep = (want_keep is None and got_keep is None) or torch.equal(want_keep, got_keep)
            print(dtype, exp, frac, threshold, "OK" if same and same_keep else "MISMATCH")
    """
)


@triton_missing
def test_interpreted_kernel_matches_reference_bit_for_bit() -> None:
    """Run in a fresh process: TRITON_INTERPRET must be set before the kernel is decorated."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", INTERPRETED.format(cases=CASES)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("torch.")]
    assert len(lines) == len(LAYOUTS) * len(CASES)
    assert all(line.endswith("OK") for line in lines), result.stdout


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@requires_cuda
@triton_missing
@pytest.mark.parametrize("dtype", list(LAYOUTS), ids=str)
@pytest.mark.parametrize(("exp", "frac", "threshold"), CASES)
def test_cuda_kernel_matches_reference_bit_for_bit(dtype: torch.dtype, exp: int, frac: int, threshold: float) -> None:
    from newcompute_bitflip.kernels import flip_bits_triton

    layout = LAYOUTS[dtype]
    x = (torch.randn(1_000_003, generator=torch.Generator().manual_seed(exp + frac)) * 4).to(dtype)
    call = torch.tensor(2**32 + 5)
    spec = FlipSpec(exp, frac, 0, 1, threshold, (3, 0x5EED))
    want, want_keep = flip_bits(x, call, spec)
    got, got_keep = flip_bits_triton(x.cuda(), call.cuda(), spec)
    assert torch.equal(got.cpu().view(layout.int_dtype), want.view(layout.int_dtype))
    assert (want_keep is None and got_keep is None) or torch.equal(got_keep.cpu(), want_keep)


@pytest.mark.gpu
@requires_cuda
@triton_missing
def test_cuda_layer_matches_cpu_layer_forward_and_backward() -> None:
    """The whole layer on CUDA (kernel) and on CPU (reference): same output bits and same gradients."""
    from torch import nn

    from newcompute_bitflip.config import BitFlipConfig
    from newcompute_bitflip.layer import BitFlipLinear

    config = BitFlipConfig(x_p_exp=2**-6, x_p_frac=2**-3, w_p_exp=2**-6, w_p_frac=2**-3, w_zero_out_t=0.1)
    torch.manual_seed(0)
    source = nn.Linear(256, 128)
    cpu = BitFlipLinear(source, config, "fc")
    gpu = BitFlipLinear(nn.Linear(256, 128).cuda(), config, "fc")
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(64, 256, requires_grad=True)
    x_gpu = x.detach().cuda().requires_grad_()
    out_cpu, out_gpu = cpu(x), gpu(x_gpu)
    assert torch.allclose(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-4)
    out_cpu.square().sum().backward()
    out_gpu.square().sum().backward()
    assert torch.allclose(x_gpu.grad.cpu(), x.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(gpu.weight.grad.cpu(), source.weight.grad, rtol=1e-4, atol=1e-4)
    assert int(gpu.bitflip_calls) == int(cpu.bitflip_calls) == 1


@pytest.mark.gpu
@requires_cuda
def test_flip_rates_agree_with_mase_triton() -> None:
    """mase-triton's kernel uses other Philox counters, so compare statistics, not bits: per-field flip rates."""
    core = pytest.importorskip("mase_triton.random_bitflip.core")
    from newcompute_bitflip.kernels import flip_bits_triton

    x = torch.randn(4_000_000, device="cuda", dtype=torch.bfloat16)
    layout = LAYOUTS[torch.bfloat16]
    ours, _ = flip_bits_triton(x, torch.tensor(0, device="cuda"), FlipSpec(3, 2, 0, 1, 0.0, (1, 2)))
    theirs, _, _ = core.random_bitflip_fn(x, 3, 2, 1, 2, None)

    def rate(out: torch.Tensor, field: int, bits: int) -> float:
        changed = (out.view(torch.int16).to(torch.int64) ^ x.view(torch.int16).to(torch.int64)) & field
        ones = sum(int(((changed >> b) & 1).sum()) for b in range(16))
        return ones / (x.numel() * bits)

    for field, bits, p in ((layout.sign_exponent, 9, 2**-3), (layout.fraction, 7, 2**-2)):
        assert rate(ours, field, bits) == pytest.approx(p, rel=0.01)
        assert rate(theirs, field, bits) == pytest.approx(p, rel=0.01)


def test_without_triton_the_kernel_names_the_plugin_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # as on a machine without Triton
    monkeypatch.delitem(sys.modules, "newcompute_bitflip.kernels", raising=False)
    with pytest.raises(MissingDependency, match=r"pip install 'newcompute-bitflip\[gpu\]'") as err:
        importlib.import_module("newcompute_bitflip.kernels")
    assert str(err.value).startswith("newcompute-bitflip: the 'triton' package is not installed; the bit-flip Triton")
