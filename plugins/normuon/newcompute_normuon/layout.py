"""How a stored parameter maps onto the matrices NorMuon orthogonalises.

NorMuon works on the *logical* ``out × in`` matrix of a layer, whose rows are
output neurons: the per-row second moment normalises per neuron and the
update is scaled by √max(1, out/in). Storage does not always agree:

* GPT-2's ``Conv1D`` stores ``in × out``; its logical matrix is the transpose.
* Convolution-style tensors (3-D and up) are flattened to ``(dim0, rest)``,
  as the NorMuon reference does for conv filters.
* A fused projection (GPT-2 ``c_attn`` = Q, K, V stacked; gate/up pairs) is
  several logical matrices stacked along the output dimension. Orthogonalising
  the stack would couple Q, K and V and apply the shape scale of the whole
  stack, so when the configuration names it as fused, each block of rows is
  its own matrix ("slot").

Everything here returns views, so updates written through them land in the
parameter or state they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from newcompute import ConfigError

SplitSpec = int | tuple[int, ...] | None


@dataclass(frozen=True)
class Block:
    """Rows ``[start, stop)`` of the logical matrix, orthogonalised on their own."""

    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def logical_shape(shape: Sequence[int], transposed: bool) -> tuple[int, int]:
    """``(out, in)`` of the logical matrix for a tensor stored with ``shape``."""
    if len(shape) < 2:
        raise ValueError(f"NorMuon needs a tensor with at least 2 dimensions, got shape {tuple(shape)}")
    if len(shape) > 2:
        rest = 1
        for size in shape[1:]:
            rest *= size
        return shape[0], rest
    return (shape[1], shape[0]) if transposed else (shape[0], shape[1])


def logical(tensor: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The ``out × in`` view of ``tensor``."""
    if tensor.ndim > 2:
        return tensor.flatten(1)
    return tensor.mT if transposed else tensor


def resolve_blocks(spec: SplitSpec, out_features: int, name: str) -> tuple[Block, ...]:
    """The row blocks for a split ``spec``: ``None`` (one block), a part count, or row counts."""
    if spec is None:
        return (Block(0, out_features),)
    if isinstance(spec, int):
        if spec < 1 or out_features % spec:
            raise ConfigError(
                f"fused: '{name}' has {out_features} output rows, which do not split into {spec} equal parts; "
                f"give the part count as a divisor of {out_features} or list the row counts, e.g. [a, b, c]."
            )
        sizes = (out_features // spec,) * spec
    else:
        sizes = tuple(spec)
        if not sizes or any(s < 1 for s in sizes) or sum(sizes) != out_features:
            raise ConfigError(
                f"fused: splits {list(sizes)} for '{name}' must be positive row counts summing to its "
                f"{out_features} output rows."
            )
    blocks, start = [], 0
    for size in sizes:
        blocks.append(Block(start, start + size))
        start += size
    return tuple(blocks)


def block_view(tensor: torch.Tensor, transposed: bool, block: Block, tall: bool) -> torch.Tensor:
    """The block as the Newton–Schulz stack holds it: ``rows ≤ cols``, so tall blocks are transposed."""
    view = logical(tensor, transposed)[block.start : block.stop]
    return view.mT if tall else view
