"""NorMuon's cost estimate: the Newton–Schulz products it adds to each optimizer step, as a factor on the run.

The forward and backward products are those of the baseline; what NorMuon
adds is orthogonalising every hidden matrix once per optimizer step. One
Newton–Schulz iteration on an ``a × b`` matrix (``a <= b``; the reference
works on the transpose of a tall matrix) computes ``A = X·Xᵀ`` (``a²b``
multiply-accumulates), ``A·A`` (``a³``) and ``B·X`` (``a²b``), so
``2a²b + a³``; the config's ``ns_steps`` iterations run per step. The
reference runs them in bf16 (Li et al., "NorMuon", arXiv 2510.05491, 2025,
and its reference ``normuon.py``), so they cost what bf16 products of the
same size cost. Training multiply-accumulates per token are three times the
forward ones (forward, input gradient, weight gradient: the 2N + 4N FLOPs
per token of Kaplan et al., "Scaling Laws for Neural Language Models",
arXiv 2001.08361, 2020, section 2.1). The energy factor is therefore
``1 + NS / training`` and the matmul-throughput factor its inverse.

Bytes moved are not estimated: the operand traffic of the iterations depends
on how the kernels tile them, and no published figure is used for it.
"""

from __future__ import annotations

from newcompute import CostEstimate, MatmulShape

from newcompute_normuon.config import NorMuonConfig

TRAINING_MACS_PER_FORWARD_MAC = 3
"""Kaplan et al. 2020 (arXiv 2001.08361), section 2.1: training costs 6N FLOPs per token, 2N of them forward."""

SOURCES = (
    "Li et al. 2025, NorMuon (arXiv 2510.05491) and its reference normuon.py: ns_steps Newton-Schulz iterations "
    "A = X X^T, B = bA + cA^2, X = aX + BX per matrix per step, in bf16",
    "Kaplan et al. 2020, Scaling Laws for Neural Language Models (arXiv 2001.08361), section 2.1: 6N training "
    "FLOPs per token, 2N forward",
)


def newton_schulz_macs(rows: int, cols: int, steps: int) -> int:
    """Multiply-accumulates of ``steps`` Newton–Schulz iterations on a ``rows × cols`` matrix."""
    short, long = sorted((rows, cols))
    return steps * (2 * short * short * long + short**3)


def estimate(
    config: NorMuonConfig, layers: list[MatmulShape], model_macs_per_token: int, tokens_per_step: int
) -> CostEstimate | None:
    matrices = [layer for layer in layers if layer.kind == "matrix"]
    training = TRAINING_MACS_PER_FORWARD_MAC * model_macs_per_token * tokens_per_step
    if not matrices or not training:
        return None
    extra = sum(newton_schulz_macs(m.rows, m.cols, config.ns_steps) for m in matrices) / training
    return CostEstimate(
        matmul_energy_vs_bf16=1 + extra,
        matmul_throughput_vs_bf16=1 / (1 + extra),
        scope="run",
        sources=SOURCES,
        notes=f"Newton-Schulz adds {extra:.3g} x the training matmuls per step, at bf16 cost. Bytes moved are not "
        "estimated (they depend on the kernels' tiling).",
    )
