"""Counting inside named regions of the frame (`zoo predict --zones FILE`; the format is in docs/zones.md).

One rule decides where a person is counted, for points and map cells alike: an item belongs to the FIRST zone, in
the file's order, whose polygon contains its position, edges and corners included; an item no polygon contains
belongs to none. So every item belongs to at most one zone, and zones that tile the frame (share edges, leave no
gap) give every item in the frame to exactly one of them: their counts add up to the frame's count.

- Point families (no density map): each predicted point is an item, at its position.
- Density families (`Prediction.map_is_density`): each map cell is an item weighing its value, at the centre of
  the part of the cell inside the image (a border cell's padding is not image), so the map is rasterised at its
  own stride and no cell is split between zones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from zoo.core.errors import ZooError
from zoo.core.types import Prediction

ZONE_COLOURS = ((0, 255, 255), (255, 200, 0), (0, 255, 0), (255, 128, 128), (128, 160, 255), (255, 255, 0))


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: np.ndarray  # (K, 2) float64 vertices (x, y) in input pixels, K >= 3


def load_zones(path: str | Path) -> list[Zone]:
    """The zones of a JSON file `{"zones": [{"name": ..., "polygon": [[x, y], ...]}, ...]}`; any problem is one
    ZooError naming the file and the zone."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{path}: zone file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZooError(f"{path}: cannot read the zone file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("zones"), list):
        raise ZooError(f'{path}: expected an object with a "zones" list (see docs/zones.md)')
    if not raw["zones"]:
        raise ZooError(f"{path}: the zones list is empty")
    zones, names = [], set()
    for k, entry in enumerate(raw["zones"], 1):
        where = f"{path}: zone {k}"
        if not isinstance(entry, dict):
            raise ZooError(f'{where} is not an object with "name" and "polygon"')
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ZooError(f'{where} has no "name" (a non-empty string)')
        if name in names:
            raise ZooError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        polygon = entry.get("polygon")
        valid = (isinstance(polygon, list) and all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(c, int | float) and not isinstance(c, bool)
                                                        for c in v) for v in polygon))
        if not valid:
            raise ZooError(f'{where} ({name!r}): "polygon" must be a list of [x, y] pixel coordinates')
        vertices = np.asarray(polygon, np.float64).reshape(-1, 2)
        if len(vertices) < 3 or not np.isfinite(vertices).all():
            raise ZooError(f"{where} ({name!r}): a polygon needs at least 3 finite vertices, got {len(vertices)}")
        if abs(polygon_area(vertices)) == 0:
            raise ZooError(f"{where} ({name!r}): the polygon encloses no area")
        zones.append(Zone(name, vertices))
    return zones


def polygon_area(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def contains(polygon: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Whether each (x, y) of `xy` lies inside `polygon` or on its boundary (edges and vertices included)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    x, y = xy[:, 0:1], xy[:, 1:2]  # (N, 1) against (1, K) edges
    x1, y1 = polygon[None, :, 0], polygon[None, :, 1]
    x2, y2 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    scale = np.abs(x2 - x1) + np.abs(y2 - y1)
    on_edge = ((np.abs(cross) <= 1e-9 * scale * (1 + np.abs(x) + np.abs(y)))
               & (x >= np.minimum(x1, x2)) & (x <= np.maximum(x1, x2))
               & (y >= np.minimum(y1, y2)) & (y <= np.maximum(y1, y2)))
    # Crossing number: edges that straddle the horizontal line through the point, crossed to its right.
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    inside = (np.sum(straddles & (x < crossing_x), axis=1) % 2) == 1
    return inside | on_edge.any(axis=1)


def assign(zones: list[Zone], xy: np.ndarray) -> np.ndarray:
    """Each position's zone index under the module's rule (the first zone containing it), -1 for none."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    labels = np.full(len(xy), -1, np.int64)
    for k, zone in enumerate(zones):
        free = labels < 0
        if free.any():
            hit = contains(zone.polygon, xy[free])
            labels[np.flatnonzero(free)[hit]] = k
    return labels


def cell_centres(map_shape: tuple[int, int], stride: int, image_size: tuple[int, int]) -> np.ndarray:
    """(rows * cols, 2) centres (x, y) of the map cells' parts inside the (height, width) image, row-major."""
    rows, cols = map_shape
    height, width = image_size

    def centres(n, extent):
        start = np.arange(n, dtype=np.float64) * stride
        return (start + np.minimum(start + stride, extent)) / 2

    cx, cy = np.meshgrid(centres(cols, width), centres(rows, height))
    return np.column_stack([cx.ravel(), cy.ravel()])


class ZoneCounter:
    """Counts per zone for predictions on images; a map's cell labels are computed once per (map shape, stride,
    image size), which a video's frames share."""

    def __init__(self, zones: list[Zone]):
        self.zones = zones
        self._labels: dict[tuple, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        return [z.name for z in self.zones]

    def counts(self, prediction: Prediction, image_size: tuple[int, int]) -> dict[str, float]:
        """{zone name: count} for `prediction` on an image of (height, width) `image_size`."""
        n = len(self.zones)
        if prediction.map_is_density and prediction.dense_map is not None:
            dense = np.asarray(prediction.dense_map, np.float64)
            dense = dense.reshape(dense.shape[-2:])
            key = (dense.shape, int(prediction.map_stride), tuple(image_size))
            if key not in self._labels:
                self._labels[key] = assign(self.zones, cell_centres(dense.shape, prediction.map_stride, image_size))
            labels = self._labels[key]
            inside = labels >= 0
            totals = np.bincount(labels[inside], weights=dense.ravel()[inside], minlength=n)
        else:
            labels = assign(self.zones, prediction.points)
            totals = np.bincount(labels[labels >= 0], minlength=n).astype(np.float64)
        return {zone.name: float(total) for zone, total in zip(self.zones, totals, strict=True)}


def draw_zones(canvas: np.ndarray, zones: list[Zone], counts: dict[str, float] | None = None,
               keep_clear: tuple[int, int] = (0, 0)) -> None:
    """Each zone's outline and `name: count` label (at its top-most vertex) drawn on the RGB `canvas`; a label
    that would fall on the top-left box of `keep_clear` (width, height: the frame's count) goes just below it."""
    scale = max(0.3, canvas.shape[0] / 900)
    thickness = max(1, round(scale * 1.5))
    for k, zone in enumerate(zones):
        colour = ZONE_COLOURS[k % len(ZONE_COLOURS)]
        outline = np.round(zone.polygon).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [outline], True, colour, thickness, cv2.LINE_AA)
        text = zone.name if counts is None else f"{zone.name}: {format_count(counts[zone.name])}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = zone.polygon[np.argmin(zone.polygon[:, 1])]
        x = int(np.clip(top[0], 0, max(0, canvas.shape[1] - tw - 4)))
        y = int(np.clip(top[1] + th + 4, th + 4, max(th + 4, canvas.shape[0] - baseline - 2)))
        if x < keep_clear[0] and y - th - 3 < keep_clear[1]:
            y = keep_clear[1] + th + 4
        cv2.rectangle(canvas, (x, y - th - 3), (x + tw + 4, y + baseline), (0, 0, 0), -1)
        cv2.putText(canvas, text, (x + 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def format_count(count: float) -> str:
    return f"{count:.0f}" if float(count).is_integer() else f"{count:.1f}"
