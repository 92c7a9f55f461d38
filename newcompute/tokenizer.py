"""A byte-level tokenizer that needs no download.

Models built from scratch offline have no tokenizer of their own. Every
UTF-8 text maps losslessly onto 256 byte tokens, so a byte-level vocabulary
works for any corpus, saves with the run like any HF tokenizer, and keeps
perplexities comparable between runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
BYTE_VOCAB_SIZE = 257


def _byte_symbols() -> list[str]:
    """One printable character per byte value, in byte order (the ByteLevel convention).

    Printable Latin-1 bytes stand for themselves; the others take the next
    unused code points from U+0100, so no symbol is whitespace or a control.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 257-token tokenizer: the 256 bytes, then ``<|endoftext|>`` (also used for padding).

    transformers is imported here, not with the module: the presets read
    :data:`BYTE_VOCAB_SIZE` while the CLI starts, which must not wait for it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    vocab[EOS] = 256
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS, bos_token=EOS)
