"""Model presets whose architecture is embedded, so ``--init scratch`` works offline.

The ``clm-*`` presets are AICrossSim's CLM series (Llama architecture,
cosmo2 tokenizer, vocabulary 49152) as NewComputeBench defines them in
torchtitan: RMSNorm, SwiGLU, rope θ 10000, MLP width from torchtitan's llama3
rule. Values the published configs may set differently and that we could
not read offline are assumptions, listed in docs/models.md: untied
embeddings, 2048 positions, RMSNorm ε 1e-5. The ``tiny*`` presets are for
tests and demos (a few hundred thousand parameters), one per model family
the attention interception supports.

They reach the rest of newcompute only through the presets hook: the
core's own plugin (:mod:`newcompute.core_plugin`) registers
:data:`CORE_PRESETS`, exactly as a plugin registers its own, so every
reader (``newcompute presets``, ``--model NAME``) asks the registry.
Transformers' config classes are imported when a preset is built, not
when this table is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from typing import TYPE_CHECKING

from newcompute.tokenizer import BYTE_VOCAB_SIZE

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CLM_VOCAB = 49152
TINY_VOCAB = BYTE_VOCAB_SIZE


@dataclass(frozen=True)
class Preset:
    """A model ``--model NAME`` builds offline, as registered by ``newcompute_register_presets``.

    ``build_config`` returns the architecture as a transformers
    ``PretrainedConfig`` (``--init scratch`` builds it with random weights);
    ``hub_id`` names published weights, loaded when they can be had.
    """

    name: str
    summary: str
    build_config: Callable[[], PretrainedConfig]
    hub_id: str | None = None


def torchtitan_mlp_width(dim: int, multiple_of: int = 128, multiplier: float = 1.3) -> int:
    """torchtitan's llama3 rule: 4·dim → ⌊2/3⌋ → ⌊×multiplier⌋ → round up to ``multiple_of``."""
    hidden = int(2 * (4 * dim) / 3)
    hidden = int(multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def _clm(dim: int, layers: int, heads: int, kv_heads: int) -> Callable[[], PretrainedConfig]:
    def build() -> PretrainedConfig:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=CLM_VOCAB,
            hidden_size=dim,
            intermediate_size=torchtitan_mlp_width(dim),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=dim // heads,
            max_position_embeddings=2048,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
        )

    return build


_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256)


def _tiny_llama() -> PretrainedConfig:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=TINY_VOCAB, intermediate_size=128, num_key_value_heads=2, **_TINY)


def _tiny_qwen2() -> PretrainedConfig:
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=TINY_VOCAB, intermediate_size=128, num_key_value_heads=2, **_TINY)


def _tiny_mistral() -> PretrainedConfig:
    from transformers import MistralConfig

    return MistralConfig(vocab_size=TINY_VOCAB, intermediate_size=128, num_key_value_heads=2, **_TINY)


def _tiny_gpt2() -> PretrainedConfig:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=TINY_VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=256, eos_token_id=256
    )


def _tiny_gpt_neox() -> PretrainedConfig:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(vocab_size=TINY_VOCAB, intermediate_size=128, **_TINY)


def _tiny_opt() -> PretrainedConfig:
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        word_embed_proj_dim=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
    )


CORE_PRESETS: list[Preset] = [
    Preset("tiny", "Llama, 2 layers, width 64, byte vocabulary: tests and demos", _tiny_llama),
    Preset("tiny-qwen2", "Qwen2 counterpart of tiny", _tiny_qwen2),
    Preset("tiny-mistral", "Mistral counterpart of tiny", _tiny_mistral),
    Preset("tiny-gpt2", "GPT-2 counterpart of tiny (Conv1D layers)", _tiny_gpt2),
    Preset("tiny-gpt-neox", "GPT-NeoX counterpart of tiny", _tiny_gpt_neox),
    Preset("tiny-opt", "OPT counterpart of tiny", _tiny_opt),
    Preset("clm-60m", "AICrossSim CLM 60M (dim 384, 22 layers)", _clm(384, 22, 6, 2), "AICrossSim/clm-60m"),
    Preset("clm-200m", "AICrossSim CLM 200M (dim 768, 24 layers)", _clm(768, 24, 12, 4), "AICrossSim/clm-200m"),
    Preset("clm-400m", "AICrossSim CLM 400M (dim 960, 30 layers)", _clm(960, 30, 15, 5), "AICrossSim/clm-400m"),
    Preset("clm-600m", "AICrossSim CLM 600M (dim 1152, 32 layers)", _clm(1152, 32, 18, 6), "AICrossSim/clm-600m"),
    Preset("clm-1.1b", "AICrossSim CLM 1.1B (dim 1536, 32 layers)", _clm(1536, 32, 24, 8), "AICrossSim/clm-1.1b"),
]
