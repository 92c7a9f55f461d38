"""Attention interception through transformers' ``AttentionInterface``.

Paradigms do not rewrite attention modules. They supply the two matrix
products (Q·Kᵀ and P·V) as an :class:`AttentionMatmuls` module attached to
each attention module; the core registers one attention implementation,
``newcompute``, that runs the shared steps (scaling, mask, grouped-query
repeat, soft-capping, softmax, dropout) once for every model family that
routes attention through the interface (Llama, Qwen2, Mistral, GPT-2,
GPT-NeoX, OPT…). Attention modules without matmuls attached (excluded by
rules) run PyTorch's SDPA, so masks are built as SDPA wants them (boolean,
or none at all for plain causal attention) and the intercepted path
accepts both. Masked scores are set to the dtype's minimum rather than −inf
so a fully masked (padding) row gives uniform weights, not NaN, as eager
attention does.

A paradigm with a fused kernel may also take the whole attention through
:meth:`AttentionMatmuls.attend`: materialising every layer's scores and
probabilities costs more memory and time than the products themselves.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask

from newcompute.errors import ConfigError

IMPLEMENTATION = "newcompute"
MATMULS_ATTR = "newcompute_matmuls"
_ATTENTION_CLASS = re.compile(r"Attention$")
_PLAIN_CAUSAL = "_newcompute_plain_causal"
_MASK_PARAMETERS = inspect.signature(sdpa_mask)
_unpacked = False
_products_only = False
"""Switched by :func:`unpacked_sequences` and :func:`products_only`. Plain globals, not context variables:
dynamo cannot read a ``ContextVar``, which broke the graph in every attention layer under ``--compile`` (and,
breaks splitting the layers into frames of their own, made each layer recompile)."""
_probe: set[int] | None = None


class AttentionMatmuls(nn.Module):
    """The two products inside attention, as a paradigm computes them.

    Both receive 4-D tensors laid out ``(batch, heads, tokens, head_dim)``;
    keys and values are already repeated for grouped-query attention.
    ``qk(q, k)`` returns unscaled scores ``q @ kᵀ`` of shape
    ``(batch, heads, q_tokens, k_tokens)``; ``pv(p, v)`` returns ``p @ v``.
    Keep statistics in buffers: they are saved with the model.
    """

    def qk(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pv(self, probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, causal: bool
    ) -> torch.Tensor | None:
        """Optionally compute the whole attention in one call; ``None`` takes the ``qk``/``pv`` path.

        The core offers the call only when nothing but scaling and an
        optional causal mask stands between the two products: no padding or
        other mask, no soft-capping, no dropout, no attention sinks.
        ``key`` and ``value`` keep their own head count (grouped-query
        attention: query head ``h`` reads key head ``h // (heads //
        key_heads)``). ``causal`` masks key ``j`` for query ``i`` when ``j >
        i + key_tokens − query_tokens`` (the queries are the last tokens).
        The result, ``(batch, heads, q_tokens, head_dim)``, must be what
        ``qk`` → scale → mask → fp32 softmax → ``pv`` would give, for
        example through a flash-style kernel. The default declines, so
        implementing ``qk`` and ``pv`` is enough.
        """
        return None


def _causal(module: nn.Module, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor | None:
    """The causal mask transformers leaves out when SDPA could use ``is_causal`` instead."""
    if not _is_causal(module, query):
        return None
    q_len, k_len = query.shape[-2], key.shape[-2]
    return torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)


def _is_causal(module: nn.Module, query: torch.Tensor) -> bool:
    return getattr(module, "is_causal", True) and query.shape[-2] != 1


def newcompute_mask(*args: object, **kwargs: object) -> torch.Tensor | None:
    """transformers' SDPA mask, with masks that are nothing but causal marked as such.

    transformers leaves a plain causal mask out (``None``) when it can, but
    builds it in full while tracing or capturing a CUDA graph, where reading
    a padding mask would synchronise. The mark lets a fused ``attend`` run
    on such a mask as causal instead of declining it.
    """
    mask = sdpa_mask(*args, **kwargs)
    if mask is not None:
        given = _MASK_PARAMETERS.bind_partial(*args, **kwargs).arguments
        plain = (
            given.get("attention_mask") is None
            and given.get("local_size") is None
            and (given.get("mask_function", causal_mask_function) is causal_mask_function or _unpacked)
        )
        if plain:
            setattr(mask, _PLAIN_CAUSAL, True)
    return mask


@contextlib.contextmanager
def unpacked_sequences() -> Iterator[None]:
    """Declare that model calls inside the block feed whole sequences: no padding, no packed documents.

    Under tracing or CUDA-graph capture transformers cannot look at the
    position ids for packed documents, so it combines the causal mask with a
    document mask that, for one sequence per row, masks nothing more. Inside
    this block such a mask (with no padding mask and no sliding window)
    counts as plain causal. The trainer's blocks are single token streams.
    """
    global _unpacked
    before, _unpacked = _unpacked, True
    try:
        yield
    finally:
        _unpacked = before


@contextlib.contextmanager
def products_only() -> Iterator[None]:
    """Run attention inside the block through the paradigms' ``qk`` and ``pv``, never ``attend``.

    The two products are the definition a fused ``attend`` must reproduce;
    this is how to compare against it (the conformance suite does).
    """
    global _products_only
    before, _products_only = _products_only, True
    try:
        yield
    finally:
        _products_only = before


def _attend_offered(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None
) -> bool:
    """No mask, or a square plain causal one: nothing a fused kernel needs to read."""
    if _products_only:
        return False
    if attention_mask is None:
        return True
    return getattr(attention_mask, _PLAIN_CAUSAL, False) and query.shape[-2] == key.shape[-2] and _is_causal(module, query)


def _repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    return states if groups == 1 else states.repeat_interleave(groups, dim=1)


def newcompute_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``newcompute`` entry of ``AttentionInterface`` (HF's calling convention)."""
    matmuls = module._modules.get(MATMULS_ATTR)
    if matmuls is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError(
            f"{type(module).__name__} uses attention sinks, which newcompute's attention interception does not model"
        )
    if _probe is not None:
        _probe.add(id(module))
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    plain = softcap is None and (dropout == 0.0 or not module.training)
    if plain and _attend_offered(module, query, key, attention_mask):
        fused = matmuls.attend(query, key, value, scale=scale, causal=_is_causal(module, query))
        if fused is not None:
            return fused.transpose(1, 2).contiguous(), None
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_heads(key, groups), _repeat_heads(value, groups)
    scores = matmuls.qk(query, key) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        scores = scores + attention_mask[..., : key.shape[-2]]
    else:
        keep = attention_mask[..., : key.shape[-2]] if attention_mask is not None else _causal(module, query, key)
        if keep is not None:
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = matmuls.pv(probs, value)
    return out.transpose(1, 2).contiguous(), probs


def register_implementation() -> None:
    """Make ``attn_implementation="newcompute"`` known to transformers (idempotent)."""
    AttentionInterface.register(IMPLEMENTATION, newcompute_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, newcompute_mask)


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules the interface will call with, by qualified name."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if _ATTENTION_CLASS.search(type(module).__name__) and hasattr(module, "config")
    ]


def route_through_interface(model: nn.Module) -> None:
    """Switch ``model`` to the ``newcompute`` implementation, or say why it cannot be."""
    if not isinstance(model, PreTrainedModel) or not model._can_set_attn_implementation():
        raise ConfigError(
            f"{type(model).__name__} does not route attention through transformers' AttentionInterface, "
            "so attention paradigms cannot intercept it. Use layer paradigms only for this model, "
            "or a model family that supports attn_implementation (Llama, Qwen2, Mistral, GPT-2, GPT-NeoX, OPT…)."
        )
    register_implementation()
    model.set_attn_implementation(IMPLEMENTATION)


def probing() -> bool:
    """Whether this forward is the core's routing check (:func:`record_intercepted`), whose output is discarded.

    The check runs a few tokens through the model wherever it sits (on CPU,
    before the trainer moves it, possibly with a GPU-only process group
    already up). A paradigm should neither learn from that forward
    (calibration, statistics, counters) nor communicate with other ranks.
    """
    return _probe is not None


@contextlib.contextmanager
def record_intercepted() -> Iterator[set[int]]:
    """Collect ``id()`` of every attention module whose matmuls ran inside the block.

    Used to verify, with a one-token forward, that interception is really
    reached for every layer rather than silently skipped.
    """
    global _probe
    seen: set[int] = set()
    _probe = seen
    try:
        yield seen
    finally:
        _probe = None
