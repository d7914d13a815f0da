"""Tiled inference: an image too large for one forward pass, run window by window and merged into the
`Prediction` the whole image would get.

Geometry. *Cores* partition the image, on boundaries that are multiples of the model's input stride, hence of its
map grid: a density cell is never split. The network sees each core with up to `overlap` pixels of the image
around it (clipped at the image's borders), its *window*, at most `tile` pixels on a side and zero-padded to the
stride by the ordinary predict path. Window origins are multiples of the stride too, so a window's grid is the
whole image's, shifted by whole cells; with an overlap of at least the model's `receptive_context` (see
zoo.models.base) every output a core keeps is computed from the very pixels the whole-image pass uses, and the
two predictions differ by float rounding only.

Ownership. A point is kept only from the tile whose core contains it. Cores are half-open [start, next start),
the first one open toward 0 and the last toward the far border (decode clamps points to [0, width]), so a point on
a boundary belongs to the core that starts there, and none is kept twice or lost. The dense map is assembled from
the cores' cells; a density's count is the sum of those cells, any other count the number of points kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zoo.core.errors import ZooError
from zoo.core.types import Prediction


@dataclass(frozen=True)
class Tiling:
    """How `zoo predict` cuts images: windows of at most `tile` x `tile` pixels, cores `overlap` inside them."""

    tile: int
    overlap: int
    max_pixels: int | None = None  # tile only images with more pixels; None: every image wider or taller than a tile

    def applies(self, height: int, width: int) -> bool:
        larger = height > self.tile or width > self.tile  # otherwise the one window would be the whole image
        return larger and (self.max_pixels is None or height * width > self.max_pixels)


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one side of `length` pixels. Every window but the
    last is exactly `tile` long: the first core has no context before it, the others `overlap` on both sides."""
    starts = [0]
    while length - (window := max(starts[-1] - overlap, 0)) > tile:
        starts.append(window + tile - overlap)
    ends = [*starts[1:], length]
    return [(start, end, max(start - overlap, 0), min(end + overlap, length))
            for start, end in zip(starts, ends, strict=True)]


def owned(coordinates: np.ndarray, start: int, end: int, length: int) -> np.ndarray:
    """Which coordinates the core [start, end) of a side of `length` owns (the outer cores own what lies beyond)."""
    return ((coordinates >= start) | (start == 0)) & ((coordinates < end) | (end == length))


def cells(start: int, end: int, origin: int, stride: int) -> slice:
    """The map cells covering pixels [start, end) of a map whose first cell starts at pixel `origin`."""
    return slice((start - origin) // stride, -(-(end - origin) // stride))


def predict_tiled(image: np.ndarray, predict: Callable[[np.ndarray], Prediction], tiling: Tiling) -> Prediction:
    """The prediction of the (H, W, 3) `image` from `predict` (one window -> its prediction) run window by window."""
    height, width = image.shape[:2]
    points, scores, blocks, last = [], [], [], None
    for (y0, y1, wy0, wy1), (x0, x1, wx0, wx1) in itertools.product(spans(height, tiling.tile, tiling.overlap),
                                                                     spans(width, tiling.tile, tiling.overlap)):
        last = predict(image[wy0:wy1, wx0:wx1])
        xy = np.asarray(last.points, np.float32).reshape(-1, 2) + np.array([wx0, wy0], np.float32)
        keep = owned(xy[:, 0], x0, x1, width) & owned(xy[:, 1], y0, y1, height)
        points.append(xy[keep])
        scores.append(np.asarray(last.scores).reshape(-1)[keep])
        if last.dense_map is not None:
            s = last.map_stride
            if any(edge % s for edge in (x0, y0, wx0, wy0)):
                raise ValueError(f"a map stride of {s} does not divide the tile grid (the model's stride)")
            blocks.append((y0 // s, x0 // s, last.dense_map[cells(y0, y1, wy0, s), cells(x0, x1, wx0, s)]))
    points, dense = np.concatenate(points), assemble(blocks)
    count = float(dense.sum(dtype=np.float64)) if last.map_is_density else float(len(points))
    return Prediction(count, points, np.concatenate(scores), dense, last.map_stride, last.map_is_density)


def assemble(blocks: list[tuple[int, int, np.ndarray]]) -> np.ndarray | None:
    """One map from the cores' blocks of cells (first row, first column, cells), None without any. Its size follows
    the blocks': a family may keep or drop the partial cells at the image's far borders, and the last tiles did."""
    if not blocks:
        return None
    height = max(row + block.shape[0] for row, _, block in blocks)
    width = max(col + block.shape[1] for _, col, block in blocks)
    dense = np.zeros((height, width), np.float32)
    for row, col, block in blocks:
        dense[row: row + block.shape[0], col: col + block.shape[1]] = block
    return dense


def resolve_tiling(model, tile: int | None, overlap: int | None, max_pixels: int) -> Tiling | None:
    """The tiling `model` runs with: `tile` pixels on a side for every larger image when given, else automatic for
    images above `max_pixels` (0: never), with the largest tile that stays within them. `overlap` defaults to the
    model's `receptive_context`. A bad value is a one-line ZooError naming the nearest valid one."""
    stride, context = model.stride, model.receptive_context
    if context is None:
        if tile is not None or overlap is not None:
            raise ZooError(f"--tile/--overlap: {type(model).__name__} states no receptive_context, so it cannot be "
                           "tiled without double counts or lost heads at the seams")
        return None
    if overlap is None:
        overlap = context
    elif overlap % stride or overlap < context:
        valid = max(context, nearest(overlap, stride))
        raise ZooError(f"--overlap {overlap}: must be a multiple of the model's stride {stride} and at least its "
                       f"receptive context {context} px; nearest valid: --overlap {valid}")
    smallest = 2 * overlap + stride  # a core of one stride between the two overlaps
    if tile is None:
        if max_pixels <= 0:
            return None
        tile = math.isqrt(max_pixels) // stride * stride
        if tile < smallest:
            raise ZooError(f"--max-pixels {max_pixels}: its {tile} px tiles are smaller than {smallest} (2 x overlap "
                           f"{overlap} + the stride {stride}); nearest valid: --max-pixels {smallest ** 2}")
        return Tiling(tile, overlap, max_pixels)
    if tile % stride or tile < smallest:
        valid = max(smallest, nearest(tile, stride))
        raise ZooError(f"--tile {tile}: must be a multiple of the model's stride {stride} and at least {smallest} "
                       f"(2 x overlap {overlap} + the stride); nearest valid: --tile {valid}")
    return Tiling(tile, overlap)


def nearest(value: int, multiple: int) -> int:
    return multiple * round(value / multiple)
