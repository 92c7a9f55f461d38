"""One simulated optical product and the state it keeps between calls.

Each product (a linear layer, or one of the two products inside an
attention layer) owns its running ranges, its noise counter and its noise
key. Ranges and counter are persistent buffers, so a checkpoint restores
the simulation exactly where it stopped; they stay fp32 (int64 for the
counter) whatever dtype the model is cast to, because a bf16 range would
move every level.

The first call after construction or after loading a state dict first
calibrates: roles whose range was never set take the batch's own range
(see :mod:`newcompute_optical.reference`). Later calls never look at
ranges on the host.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from newcompute import collecting_statistics, layer_stream, probing
from newcompute_optical import distributed, reference, statistics
from newcompute_optical.config import ProductSettings
from newcompute_optical.ops.product import OpticalProductFunction, sampled_product

RANGES = ("input_range", "weight_range", "output_range")
_RANK_MIX = 0x9E3779B1


def compute_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """The dtype the product runs in: autocast's when it is on, else the operands' common dtype."""
    device = a.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(a.dtype, b.dtype)


@torch.no_grad()
def calibrate(
    a: torch.Tensor,
    b: torch.Tensor,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    settings: ProductSettings,
    dtype: torch.dtype,
) -> None:
    """Give every role whose range was never set the (rank-agreed) range of this batch."""
    with torch.autocast(a.device.type, enabled=False):
        _calibrate(a, b, ranges, settings, dtype)


def _calibrate(
    a: torch.Tensor,
    b: torch.Tensor,
    ranges: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    settings: ProductSettings,
    dtype: torch.dtype,
) -> None:
    input_range, weight_range, output_range = ranges
    quantiles = settings.quantiles()
    for value_range, seen in ((input_range, a), (weight_range, b)):
        fill_unset(value_range, reference.batch_range(seen, quantiles))
    aq = reference.quantize(a, input_range, settings.q_levels).to(dtype)
    bq = reference.quantize_weight(b, weight_range, settings.q_levels, settings.lut_min()).to(dtype)
    exact = torch.matmul(aq.float(), bq.float().transpose(-1, -2))
    fill_unset(output_range, reference.batch_range(exact, quantiles))


def _plain_product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """The exact product, for the core's routing check: nothing is learnt from it and no rank is waited for."""
    out = torch.matmul(a.to(dtype), b.to(dtype).transpose(-1, -2))
    return out if bias is None else out + bias.to(dtype)


def fill_unset(value_range: torch.Tensor, batch: torch.Tensor) -> None:
    """A range never set takes ``batch`` widened over every rank; a set one is kept."""
    batch = distributed.agreed_range(batch)
    value_range.copy_(torch.where(reference.is_set(value_range), value_range, batch))


class OpticalProduct(nn.Module):
    """``out = Q_out(Q_in(A) · Q_w(B)ᵀ) + bias`` for ``A``: batch × M × K and ``B``: batch × N × K."""

    def __init__(self, settings: ProductSettings, name: str, device: torch.device | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.stream = layer_stream(name)
        for buffer in RANGES:
            self.register_buffer(buffer, torch.tensor(reference.UNSET, dtype=torch.float32, device=device))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer(
            "stats", torch.full((3, 2), float("-inf"), dtype=torch.float32, device=device), persistent=False
        )
        self.telemetry = statistics.new_sums(device)
        self._calibrated = False

    def ranges(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_range, self.weight_range, self.output_range

    def is_calibrated(self) -> bool:
        """Whether the first call after construction or loading has given every role a range."""
        return self._calibrated

    def mark_calibrated(self) -> None:
        """Record that a caller computing this product elsewhere has filled its unset ranges."""
        self._calibrated = True

    def noise_key(self) -> tuple[int, int]:
        stream = self.stream
        if self.settings.q_noise_per_rank:
            stream = (stream ^ (distributed.rank() * _RANK_MIX)) & 0x7FFFFFFF
        return self.settings.q_init_seed, stream

    def forward(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if probing():
            return _plain_product(a, b, bias, dtype)
        settings = self.settings
        if not self._calibrated:
            calibrate(a, b, self.ranges(), settings, dtype)
            self._calibrated = True
        key0, key1 = self.noise_key()
        quantiles = settings.quantiles()
        observed = collecting_statistics()
        if observed:
            used = statistics.snapshot(self.ranges())
        out, aq, bq = OpticalProductFunction.apply(
            a,
            b,
            bias,
            *self.ranges(),
            self.stats,
            self.calls,
            settings.q_levels,
            settings.lut_min(),
            None if quantiles is None else list(quantiles),
            1.0 - settings.q_smooth_factor,
            key0,
            key1,
            self.training,
            dtype,
        )
        if observed:
            statistics.observe(self.telemetry, a, b, aq, bq, out, bias, used)
        return out

    @torch.no_grad()
    def observe_rows(self, a: torch.Tensor, rows: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Measure this product on ``rows`` (rows of ``a``) without running it; returns their read-out.

        For a product computed elsewhere (fused attention): range use is taken over all of ``a`` and
        ``b``, the product, clipping and read-out noise over ``rows``, with the definition's read-out
        (:func:`newcompute_optical.ops.product.sampled_product`). Its dither is drawn for the smaller
        matrix (the same distribution as the kernel's, other draws), and nothing of the product's state
        moves: not its ranges, not its noise counter.
        """
        key = self.noise_key()
        settings = self.settings
        with torch.autocast(a.device.type, enabled=False):
            out, exact = sampled_product(
                rows, b, self.ranges(), settings.q_levels, settings.lut_min(), key, self.calls, dtype
            )
        statistics.record(self.telemetry, a, b, exact, out, None, statistics.snapshot(self.ranges()))
        return out

    @torch.no_grad()
    def reset(self) -> None:
        """Forget every range and restart the noise counter."""
        for buffer in RANGES:
            getattr(self, buffer).copy_(torch.tensor(reference.UNSET))
        self.calls.zero_()
        self.stats.fill_(float("-inf"))
        self._calibrated = False

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> OpticalProduct:
        kept = {name: self._buffers[name] for name in (*RANGES, "stats")}
        was_meta = self.calls.is_meta
        super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after.dtype != torch.float32:
                self._buffers[name] = after.float() if before.is_meta else before.to(after.device)
        if was_meta and not self.calls.is_meta:
            self.reset()
        return self

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._calibrated = False

    def extra_repr(self) -> str:
        s = self.settings
        return f"levels={s.q_levels}, lut_min={s.q_lut_min}, smooth={s.q_smooth_factor}, seed={s.q_init_seed}"
