"""The whole optical attention in fused kernels, with the same numerics as the two products.

The core offers a paradigm the whole attention when only scaling and a
causal mask stand between the products (see
``newcompute.AttentionMatmuls.attend``). The unfused path materialises, per
layer, the fp32 scores, their read-out, the fp32 probabilities and their
quantized copy; :mod:`newcompute_optical.kernels.flash` keeps them in tiles.
Operands are quantized by the same pass as the products' (recording the
input and weight statistics), the kernels record the rest, and both
products close their call exactly as :func:`newcompute_optical.ops.product.product`
does: statistics agreed across ranks, ranges folded, counters advanced.

Where the fused path differs from the two-product path, and why it is still
the definition: the softmax's exponential and sum are computed in another
order (flash-style, in fp32), so a probability can differ from PyTorch's
softmax in its last bit and, rarely, land on the neighbouring level; and
backward takes the softmax's row terms from the unquantized probabilities
times the values in fp32 (flash attention's identity) rather than from a
bf16-rounded gradient. The fused path serves min/max ranges only (quantile
ranges need the whole score matrix sorted).

The first call after construction or loading fills unset ranges from the
batch first, as the products would, but a slice of heads at a time (under
no_grad), so that it does not need the memory the fused path saves.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from newcompute import missing_dependency, probing
from newcompute_optical import distributed, reference
from newcompute_optical.config import ProductSettings
from newcompute_optical.product import OpticalProduct, fill_unset

try:
    from newcompute_optical.kernels import flash
    from newcompute_optical.kernels.fold import close_call
    from newcompute_optical.kernels.quantize import quantize
except ImportError:  # no Triton: applies() is false, so attention takes the two products
    flash = close_call = quantize = None

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
MAX_HEAD_DIM = 256
_CALIBRATION_ELEMENTS = 1 << 24
"""Scores per slice of heads while calibrating (64 MiB of fp32)."""


def applies(settings: ProductSettings, query: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether this call can take the fused kernels (else the two products run, as defined).

    Not during the core's routing check: the products then compute plainly and learn nothing.
    """
    return (
        not probing()
        and flash is not None
        and query.is_cuda
        and not torch.compiler.is_compiling()
        and not settings.q_bypass
        and settings.quantiles() is None
        and dtype in _DTYPES
        and query.shape[-1] <= MAX_HEAD_DIM
    )


def _quantize_heads(
    x: torch.Tensor,
    value_range: torch.Tensor,
    levels: int,
    dtype: torch.dtype,
    stats: torch.Tensor | None,
    stats_row: int,
    lut_min: float | None,
) -> torch.Tensor:
    """Quantize a ``(B, H, T, D)`` tensor in one pass, without first copying it into head-major order.

    Attention receives heads as a transposed view of the projection's output;
    when that is the layout, the pass runs over it as ``(B, T, H·D)`` and
    returns the same view of its result.
    """
    batch, heads, tokens, dim = x.shape
    token_major = x.transpose(1, 2)
    if token_major.is_contiguous():
        rows = token_major.reshape(batch, tokens, heads * dim)
        out = quantize(rows, value_range, levels, dtype, stats=stats, stats_row=stats_row, lut_min=lut_min)
        return out.view(batch, tokens, heads, dim).transpose(1, 2)
    rows = x.reshape(batch * heads, tokens, dim)
    out = quantize(rows, value_range, levels, dtype, stats=stats, stats_row=stats_row, lut_min=lut_min)
    return out.view(batch, heads, tokens, dim)


def _product(product: OpticalProduct) -> flash.Product:
    key0, key1 = product.noise_key()
    return flash.Product(product.ranges(), product.stats, product.calls, key0, key1)


class FusedOpticalAttention(torch.autograd.Function):
    """Optical attention forward in two fused kernels; straight-through backward in two more."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scores: OpticalProduct,
        context: OpticalProduct,
        scale: float,
        causal: bool,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        settings = scores.settings
        levels, lut_min, training = settings.q_levels, settings.lut_min(), scores.training
        score_stats = scores.stats if training else None
        context_stats = context.stats if training else None
        qq = _quantize_heads(query, scores.input_range, levels, dtype, score_stats, 0, None)
        kq = _quantize_heads(key, scores.weight_range, levels, dtype, score_stats, 1, lut_min)
        vq = _quantize_heads(value, context.weight_range, levels, dtype, context_stats, 1, lut_min)
        save = any(ctx.needs_input_grad[:3])
        out, saved = flash.forward(
            qq, kq, vq, _product(scores), _product(context), levels, scale, causal, training, save
        )
        take = 1.0 - settings.q_smooth_factor
        for product in (scores, context):
            if training:
                distributed.agree(product.stats)
            close_call(product.ranges(), product.stats, product.calls, take, training)
        if save:
            ctx.save_for_backward(*saved)
            ctx.settings = (scores.noise_key(), levels, scale, causal)
            ctx.dtypes = (query.dtype, key.dtype, value.dtype)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = flash.Saved(*ctx.saved_tensors)
        scores_key, levels, scale, causal = ctx.settings
        grads = flash.backward(grad, saved, scores_key, levels, scale, causal, ctx.dtypes)
        return (*grads, None, None, None, None, None)


def _widest(ranges: Iterable[torch.Tensor]) -> torch.Tensor:
    stacked = torch.stack(list(ranges))
    return torch.stack((stacked[:, 0].min(), stacked[:, 1].max()))


@torch.no_grad()
def calibrate(
    scores: OpticalProduct,
    context: OpticalProduct,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    causal: bool,
    dtype: torch.dtype,
) -> None:
    """Fill the unset ranges of both products from this batch, as their first calls would."""
    settings = scores.settings
    levels, lut_min = settings.q_levels, settings.lut_min()
    groups = query.shape[1] // key.shape[1]
    q = query.reshape(-1, *query.shape[-2:])
    k = key.repeat_interleave(groups, dim=1).reshape(-1, *key.shape[-2:])
    v = value.repeat_interleave(groups, dim=1).reshape(-1, *value.shape[-2:])
    fill_unset(scores.input_range, reference.batch_range(q, None))
    fill_unset(scores.weight_range, reference.batch_range(k, None))
    fill_unset(context.weight_range, reference.batch_range(v, None))
    q_len, k_len = q.shape[1], k.shape[1]
    step = max(1, _CALIBRATION_ELEMENTS // (q_len * k_len))
    starts = range(0, q.shape[0], step)
    keep = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len) if causal else None
    key0, key1 = scores.noise_key()

    def exact_scores(start: int) -> torch.Tensor:
        aq = reference.quantize(q[start : start + step], scores.input_range, levels).to(dtype)
        bq = reference.quantize_weight(k[start : start + step], scores.weight_range, levels, lut_min).to(dtype)
        return torch.matmul(aq.float(), bq.float().transpose(-1, -2))

    def probabilities(start: int) -> torch.Tensor:
        exact = exact_scores(start)
        rows = exact.shape[0] * q_len
        noise = reference.dither(rows, k_len, key0, key1, scores.calls, first_row=start * q_len).view(exact.shape)
        logits = reference.quantize_dithered(exact, scores.output_range, levels, noise).to(dtype) * scale
        if keep is not None:
            logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=-1, dtype=torch.float32).to(dtype)

    def exact_context(start: int) -> torch.Tensor:
        pq = reference.quantize(probabilities(start), context.input_range, levels).to(dtype)
        vq = reference.quantize_weight(v[start : start + step], context.weight_range, levels, lut_min).to(dtype)
        return torch.matmul(pq.float(), vq.float())

    fill_unset(scores.output_range, _widest(reference.batch_range(exact_scores(s), None) for s in starts))
    fill_unset(context.input_range, _widest(reference.batch_range(probabilities(s), None) for s in starts))
    fill_unset(context.output_range, _widest(reference.batch_range(exact_context(s), None) for s in starts))
    scores.mark_calibrated()
    context.mark_calibrated()


def attention(
    scores: OpticalProduct,
    context: OpticalProduct,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    causal: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``context(softmax(mask(scale · scores(query, key))), value)`` as one fused call, ``(B, H, Tq, D)``.

    Needs Triton; without it this raises :class:`newcompute.MissingDependency` (use the two products).
    """
    if flash is None:
        raise missing_dependency("triton", "newcompute-optical", "the fused optical attention kernels")
    with torch.autocast(query.device.type, enabled=False):
        if not (scores.is_calibrated() and context.is_calibrated()):
            calibrate(scores, context, query, key, value, scale, causal, dtype)
        return FusedOpticalAttention.apply(query, key, value, scores, context, scale, causal, dtype)
