"""Local maxima of dense maps, shared by the density and heatmap families' point decoding."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

# The neighbours that come before a cell in raster order (row above, then the cell to the left).
_EARLIER = ((-1, -1), (-1, 0), (-1, 1), (0, -1))


def _shifted(maps: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """`maps` moved so that cell (i, j) holds the value of cell (i + dy, j + dx); `fill` off the map."""
    padded = F.pad(maps, (1, 1, 1, 1), value=fill)
    h, w = maps.shape[-2:]
    return padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]


def local_maxima(maps: Tensor) -> Tensor:
    """Boolean mask of the 3x3 local maxima of (..., h, w) `maps`, at most one per run of equal neighbours.

    A cell is a maximum when no cell of its 3x3 window is larger. Equal neighbours are common in low precision
    (bf16 keeps 8 bits of mantissa) and would each count as a head; of two adjacent equal maxima only the first in
    raster order is kept, so a flat top gives one peak however it is rounded.
    """
    maps = maps.float()
    flat = maps.reshape(-1, 1, *maps.shape[-2:])  # (N, 1, h, w): max-pooling for any leading shape
    maxima = (flat == F.max_pool2d(flat, 3, stride=1, padding=1)).view_as(maps)
    keep = maxima.clone()
    for dy, dx in _EARLIER:
        tie = (_shifted(maps, dy, dx, float("nan")) == maps) & _shifted(maxima.float(), dy, dx, 0.0).bool()
        keep &= ~tie
    return keep
