"""The fused attention kernels, run by Triton's CPU interpreter, against the two optical products.

Executed in a subprocess by test_optical_flash.py (Triton decides at import
whether kernels are interpreted). fp32 only, for the reason given in
optical_interpreter_check.py. Prints one line per case; a mismatch raises.
"""

from __future__ import annotations

import os

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from newcompute_optical.ops import attention as fused_attention
from optical_support import compare_fused_attention

fused_attention._CALIBRATION_ELEMENTS = 2048  # calibrate one (batch, head) slice at a time

CASES = {
    "causal, training, first call": (37, 37, True, True),
    "causal, training": (37, 37, True, True),
    "full, training": (29, 37, False, True),
    "causal, last queries, eval": (5, 37, True, False),
    "one query, eval": (1, 37, False, False),
}

for case, (q_len, k_len, causal, training) in CASES.items():
    summary = compare_fused_attention(
        "cpu", torch.float32, q_len, k_len, causal, training, first_call=case.endswith("first call")
    )
    print(f"{case}: {summary}")
