"""Run the telemetry kernels under ``TRITON_INTERPRET=1`` (on CPU) against :func:`statistics.record_reference`.

Executed in a subprocess by test_optical_interpreter.py (Triton decides at
import whether kernels are interpreted). Counts and range use must be
identical; the two power sums only as close as a change of summation order
allows. Prints one line per case and exits non-zero on the first mismatch.
"""

from __future__ import annotations

import os

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from newcompute import StatisticSums  # noqa: E402
from newcompute_optical import statistics  # noqa: E402
from newcompute_optical.kernels import telemetry  # noqa: E402

EXACT_SLOTS = ("calls", "input_use", "weight_use", "output_use", "outputs", "clipped")


def _sums() -> StatisticSums:
    return statistics.new_sums(None)


def check(case: str, batch: int, bias: bool, dtype: torch.dtype, empty_weight_range: bool) -> None:
    generator = torch.Generator().manual_seed(batch)
    a = (torch.randn(batch, 70, 24, generator=generator) * 0.7).to(dtype)
    b = (torch.randn(batch, 150, 24, generator=generator) * 0.2).to(dtype)
    exact = torch.randn(batch, 35, 150, generator=generator) * 2.0
    out = (torch.randn(batch, 70, 150, generator=generator) * 2.0).to(dtype)
    readout = out[:, ::2]  # sampled rows of a contiguous read-out: a strided view, as telemetry passes it
    shift = torch.randn(150, generator=generator).to(dtype) if bias else None
    weight_range = [0.1, 0.1] if empty_weight_range else [-0.3, 0.25]
    ranges = torch.tensor([[-1.5, 1.0], weight_range, [-3.0, 2.5]])
    mine, theirs = _sums(), _sums()
    for _ in range(2):  # accumulating twice: the kernels add into the slots, they do not overwrite them
        telemetry.record(mine.slots("calls", len(statistics.SLOTS)), a, b, exact, readout, shift, ranges)
        statistics.record_reference(theirs, a, b, exact, readout, shift, ranges)
    for slot in EXACT_SLOTS:
        assert torch.equal(mine[slot], theirs[slot]), (case, slot, mine[slot], theirs[slot])
    for slot in ("noise", "signal"):
        torch.testing.assert_close(mine[slot], theirs[slot], rtol=1e-5, atol=0.0, msg=f"{case} {slot}")
    assert theirs["clipped"] > 0 and theirs["noise"] > 0, case
    print(f"{case}: identical counts and range use, sums within rounding")


def main() -> None:
    check("fp32", 1, False, torch.float32, False)
    check("bf16 batched with bias", 3, True, torch.bfloat16, False)
    telemetry.BLOCK_PARTIALS = 4  # more tiles than one block of partials: the reduction loops
    check("empty weight range, looped partials", 2, True, torch.float32, True)


if __name__ == "__main__":
    main()
