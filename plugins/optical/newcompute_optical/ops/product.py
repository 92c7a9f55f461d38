"""The optical product as a PyTorch operator, and its straight-through backward.

``newcompute_optical::product`` is one custom operator with two kernels:
the reference (plain PyTorch, the default on every device, CPU in
practice) and the Triton path registered for CUDA. Being an operator, it is
opaque to ``torch.compile`` (which sees its fake implementation and the
buffers it updates) and to autocast (the caller passes the compute dtype).
Eager calls skip the dispatcher and run the kernel for the device directly:
the operator's Python round trips cost more host time than the GPU spends
on a small layer.

Backward is straight-through: the gradients of the unquantized product,
taken with the quantized operands the forward saved, in the compute dtype
(``grad_A = G·Bq``, ``grad_B = Gᵀ·Aq``; the bias gets the fp32 column sum).
"""

from __future__ import annotations

import torch

from newcompute_optical import distributed, reference

RUNNING_STATE = ("input_range", "weight_range", "output_range", "stats", "calls")


def reference_kernel(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    input_range: torch.Tensor,
    weight_range: torch.Tensor,
    output_range: torch.Tensor,
    stats: torch.Tensor,
    calls: torch.Tensor,
    levels: int,
    lut_min: float | None,
    quantiles: list[float] | None,
    take: float,
    key0: int,
    key1: int,
    training: bool,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One call of an optical product: ``(out, A quantized, B quantized)``, updating the running state.

    ``a``: batch × M × K, ``b``: batch × N × K (any strides); ranges are
    ``(lo, hi)`` fp32 pairs; ``stats`` a 3 × 2 fp32 scratch of ``(−min,
    max)`` rows; ``calls`` the int64 noise counter; ``take = 1 − smooth``.
    """
    with torch.autocast(a.device.type, enabled=False):
        return _reference_call(
            a, b, bias, (input_range, weight_range, output_range), stats, calls, levels, lut_min, quantiles, take,
            (key0, key1), training, dtype,
        )


product = torch.library.custom_op("newcompute_optical::product", reference_kernel, mutates_args=RUNNING_STATE)


def _reference_call(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    stats: torch.Tensor,
    calls: torch.Tensor,
    levels: int,
    lut_min: float | None,
    quantiles: list[float] | None,
    take: float,
    key: tuple[int, int],
    training: bool,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference kernel's body, with autocast off (the operator is not autocast-aware)."""
    out, aq, bq, exact = reference.product(a, b, bias, ranges, levels, lut_min, key, calls, dtype)
    if training:
        chosen = None if quantiles is None else (quantiles[0], quantiles[1])
        for slot, seen in zip(stats, (a, b, exact)):
            slot.copy_(distributed.encode(reference.batch_range(seen, chosen)))
        distributed.agree(stats)
        for value_range, slot in zip(ranges, stats):
            value_range.copy_(reference.fold(value_range, distributed.encode(slot), take))
        stats.fill_(float("-inf"))
    calls.add_(1)
    return out, aq, bq


@product.register_fake
def _product_shapes(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    input_range: torch.Tensor,
    weight_range: torch.Tensor,
    output_range: torch.Tensor,
    stats: torch.Tensor,
    calls: torch.Tensor,
    levels: int,
    lut_min: float | None,
    quantiles: list[float] | None,
    take: float,
    key0: int,
    key1: int,
    training: bool,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, rows, _ = a.shape
    return (
        a.new_empty((batch, rows, b.shape[1]), dtype=dtype),
        a.new_empty(a.shape, dtype=dtype),
        b.new_empty(b.shape, dtype=dtype),
    )


try:
    from newcompute_optical.kernels import launch
except ImportError:  # no Triton: CUDA tensors use the reference kernel
    launch = None
else:
    product.register_kernel("cuda")(launch.product)


def _call(*args: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The operator under ``torch.compile``; in eager its kernel directly, saving the dispatcher's round trips."""
    if torch.compiler.is_compiling():
        return product(*args)
    a = args[0]
    if launch is not None and isinstance(a, torch.Tensor) and a.is_cuda:
        return launch.product(*args)
    return reference_kernel(*args)


def sampled_product(
    rows: torch.Tensor,
    b: torch.Tensor,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    levels: int,
    lut_min: float | None,
    key: tuple[int, int],
    calls: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(read-out, fp32 product)`` of ``rows`` with fixed ranges, moving nothing of the product's state.

    What telemetry measures beside a product computed elsewhere (fused attention): on CUDA with
    Triton by the product's own quantization kernels, elsewhere by the reference.
    """
    if launch is not None and rows.is_cuda:
        return launch.sampled_product(rows, b, ranges, levels, lut_min, key, calls, dtype)
    out, _, _, exact = reference.product(rows, b, None, ranges, levels, lut_min, key, calls, dtype)
    return out, exact


class OpticalProductFunction(torch.autograd.Function):
    """Autograd for :func:`product`: saves the quantized operands, backward is straight-through.

    Returns ``(out, A quantized, B quantized)``; the quantized copies carry no gradient and serve
    telemetry, which measures the product from them rather than quantizing the operands again.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        a: torch.Tensor,
        b: torch.Tensor,
        bias: torch.Tensor | None,
        input_range: torch.Tensor,
        weight_range: torch.Tensor,
        output_range: torch.Tensor,
        stats: torch.Tensor,
        calls: torch.Tensor,
        levels: int,
        lut_min: float | None,
        quantiles: list[float] | None,
        take: float,
        key0: int,
        key1: int,
        training: bool,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, aq, bq = _call(
            a,
            b,
            bias,
            input_range,
            weight_range,
            output_range,
            stats,
            calls,
            levels,
            lut_min,
            quantiles,
            take,
            key0,
            key1,
            training,
            dtype,
        )
        ctx.save_for_backward(aq, bq)
        ctx.mark_non_differentiable(aq, bq)
        ctx.dtypes = (a.dtype, b.dtype, None if bias is None else bias.dtype)
        return out, aq, bq

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor, *_quantized: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        aq, bq = ctx.saved_tensors
        a_dtype, b_dtype, bias_dtype = ctx.dtypes
        grad = grad.to(aq.dtype)
        grad_a = grad_b = grad_bias = None
        with torch.autocast(grad.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_a = torch.matmul(grad, bq).to(a_dtype)
            if ctx.needs_input_grad[1]:
                grad_b = torch.matmul(grad.transpose(-1, -2), aq).to(b_dtype)
            if ctx.needs_input_grad[2]:
                grad_bias = grad.sum(dim=(0, 1), dtype=torch.float32).to(bias_dtype)
        return (grad_a, grad_b, grad_bias) + (None,) * 13
