"""Tiny models and batches the checks run on: small enough that the whole suite takes seconds.

One preset per model family that routes attention through transformers'
``AttentionInterface``; GPT-2 is in the default set because its ``Conv1D``
layers store weights transposed, which is where layer replacements most
often go wrong.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from newcompute.config import ModelSettings
from newcompute.models import load_model
from newcompute.plugins import Registry
from newcompute.tokenizer import BYTE_VOCAB_SIZE

DEFAULT_FAMILIES: tuple[str, ...] = ("tiny", "tiny-qwen2", "tiny-gpt2")
"""Llama, Qwen2 and GPT-2 counterparts of the ``tiny`` preset."""

BATCH_SIZE = 2
SEQUENCE_LENGTH = 16


def build_tiny(
    family: str = "tiny",
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> PreTrainedModel:
    """A tiny preset of the core's with random weights drawn from ``seed``, in eval mode.

    ``device="meta"`` builds it without materialising any tensor, as
    accelerate's big-model loading does.
    """
    core = Registry()
    presets = core.presets
    if family not in presets or not family.startswith("tiny"):
        tiny = ", ".join(name for name in presets if name.startswith("tiny"))
        raise ValueError(f"Unknown model family {family!r} for conformance checks; use one of: {tiny}.")
    if torch.device(device).type == "meta":
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(presets[family].build_config(), dtype=dtype)
    else:
        settings = ModelSettings(name=family, init="scratch")
        model = load_model(settings, seed=seed, registry=core).model.to(device=device, dtype=dtype)
    return model.eval()


def sample_batch(seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """Token ids ``(2, 16)`` drawn from ``seed``, valid for every tiny preset's vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, BYTE_VOCAB_SIZE - 1, (BATCH_SIZE, SEQUENCE_LENGTH), generator=generator)
    return ids.to(device)
