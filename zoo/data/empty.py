"""Images with no one in them: what a counter must call zero.

Four kinds, each deterministic in (seed, split, index), so a validation set and a test set never share an image:
- `background`: square windows cut from annotated photos where no head point lies within `margin` pixels of the
  window (a head cut in half at the border is still someone);
- `blank`: one flat colour (black, white and greys among them);
- `texture`: grain, smooth blotches, stripes and checkerboards;
- `synthetic`: the synthetic crowds' own backgrounds (zoo.data.synthetic) before any figure is drawn.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from zoo.data.readers import image_size, load_image
from zoo.data.records import Record
from zoo.data.synthetic import render_background

KINDS = ("background", "blank", "texture", "synthetic")


@dataclass(frozen=True)
class EmptyImage:
    kind: str
    name: str  # says where the image comes from (a photo and window, or a generator and index)
    image: np.ndarray  # (H, W, 3) uint8 RGB


def _rng(seed: int, split: str, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), zlib.crc32(kind.encode()), index])


def blank_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A flat colour: a grey level half of the time (0 and 255 included), else any colour."""
    if rng.random() < 0.5:
        colour = np.full(3, rng.choice([0, 64, 128, 192, 255]), np.uint8)
    else:
        colour = rng.integers(0, 256, 3).astype(np.uint8)
    return np.broadcast_to(colour, (*size, 3)).copy()


def texture_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Grain, smooth blotches, stripes or a checkerboard around a random level."""
    height, width = size
    level, amplitude = rng.uniform(40, 215), rng.uniform(10, 40)
    kind = int(rng.integers(4))
    if kind == 0:
        pattern = rng.normal(0, 1, (height, width, 3))
    elif kind == 1:  # blotches a few to tens of pixels wide: the size of a head at some scale
        cell = int(rng.choice([4, 8, 16, 32]))
        coarse = rng.normal(0, 1, (height // cell + 2, width // cell + 2, 3))
        pattern = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        period = int(rng.integers(4, 48))
        rows, cols = np.mgrid[0:height, 0:width]
        if kind == 2:
            angle = rng.uniform(0, np.pi)
            phase = (np.cos(angle) * cols + np.sin(angle) * rows) / period
            pattern = np.sin(2 * np.pi * phase)[..., None].repeat(3, 2)
        else:
            pattern = (((rows // period) + (cols // period)) % 2 * 2.0 - 1)[..., None].repeat(3, 2)
    tint = rng.uniform(0.6, 1.0, 3)
    return np.clip(level + amplitude * pattern * tint, 0, 255).astype(np.uint8)


def synthetic_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return render_background(rng, size)[..., ::-1].copy()  # the generator draws in OpenCV's BGR


GENERATED = {"blank": blank_image, "texture": texture_image, "synthetic": synthetic_image}


def generated(kind: str, count: int, *, seed: int, split: str, size: tuple[int, int]) -> list[EmptyImage]:
    """`count` images of a generated kind (`blank`, `texture` or `synthetic`) for `split`."""
    draw = GENERATED[kind]
    return [EmptyImage(kind, f"{kind}/{split}/{i}", draw(_rng(seed, split, kind, i), size)) for i in range(count)]


def empty_windows(points: np.ndarray, height: int, width: int, size: int, margin: float,
                  step: int) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of `size`-pixel windows on a grid of `step` that hold no point within `margin`
    pixels of the window (points on the window's edge count as inside)."""
    corners = []
    for y in range(0, height - size + 1, step):
        for x in range(0, width - size + 1, step):
            if len(points):
                inside = ((points[:, 0] >= x - margin) & (points[:, 0] <= x + size + margin)
                          & (points[:, 1] >= y - margin) & (points[:, 1] <= y + size + margin))
                if inside.any():
                    continue
            corners.append((x, y))
    return corners


def background_crops(records: Iterable[Record], *, size: int, margin: float, limit: int, step: int | None = None,
                     seed: int = 0) -> list[EmptyImage]:
    """Up to `limit` windows without heads cut from the records' photos, chosen evenly at random (seeded) among
    all such windows; a photo smaller than `size` gives none. Windows are found from each photo's size alone, so
    only the photos that give a chosen window are decoded, one at a time."""
    found: list[tuple[Record, int, int]] = []
    for record in records:
        height, width = image_size(record.image)
        points = np.asarray(record.points, np.float64).reshape(-1, 2)
        found += [(record, x, y) for x, y in empty_windows(points, height, width, size, margin, step or size // 2)]
    if len(found) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(found), limit, replace=False))
        found = [found[i] for i in keep]
    crops, image, decoded = [], None, None
    for record, x, y in found:  # grouped by photo: the windows keep the records' order
        if decoded is not record:
            image, decoded = load_image(record.image), record
        crops.append(EmptyImage("background", f"{record.image.name}@{x},{y}", image[y:y + size, x:x + size].copy()))
    return crops
