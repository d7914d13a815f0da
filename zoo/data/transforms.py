"""Joint transforms: every geometric change to the pixels moves the points with them.

A `Sample` carries the image as (H, W, 3) uint8 RGB until `to_tensor`, the points, and for each point its row in
the original annotation (`ids`), so per-point data computed on the full image (e.g. adaptive Gaussian widths) can
follow a point through crops, and the total resize factor (`scale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from zoo.data.readers import inside

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    points: np.ndarray  # (N, 2) float32 (x, y)
    ids: np.ndarray  # (N,) int64: row of each point in the source annotation
    scale: float = 1.0  # total resize factor since loading
    valid_size: tuple[int, int] | None = None  # (h, w) of real content once padded
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


def resize(sample: Sample, height: int, width: int) -> Sample:
    """Resize to (height, width); a point keeps its place on the content (x scales by width / W)."""
    h, w = sample.size
    sx, sy = width / w, height / h
    interp = cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_LINEAR
    image = cv2.resize(sample.image, (width, height), interpolation=interp)
    points = sample.points * np.array([sx, sy], np.float32)
    return replace(sample, image=image, points=points, scale=sample.scale * float(np.sqrt(sx * sy)))


def random_scale(sample: Sample, rng: np.random.Generator, low: float, high: float, min_side: int = 0) -> Sample:
    """Resize by a factor drawn uniformly from [low, high], never below `min_side` pixels on either side."""
    factor = rng.uniform(low, high)
    h, w = sample.size
    factor = max(factor, min_side / min(h, w))
    return resize(sample, max(1, round(h * factor)), max(1, round(w * factor)))


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop a window (zero-padding where it leaves the image); points outside the window are dropped."""
    h, w = sample.size
    canvas = np.zeros((height, width, 3), np.uint8)
    y0, x0 = max(top, 0), max(left, 0)
    # Clamped so a window wholly outside the image gives an empty overlap rather than negative (wrapping) slices.
    y1, x1 = max(min(top + height, h), y0), max(min(left + width, w), x0)
    canvas[y0 - top:y1 - top, x0 - left:x1 - left] = sample.image[y0:y1, x0:x1]
    # Points can only live where real pixels are: keep those on the part of the window that overlaps the image.
    keep = inside(sample.points - np.array([x0, y0], np.float32), y1 - y0, x1 - x0)
    points = sample.points[keep] - np.array([left, top], np.float32)
    return replace(sample, image=canvas, points=points, ids=sample.ids[keep])


def random_crop(sample: Sample, rng: np.random.Generator, size: int) -> Sample:
    h, w = sample.size
    top = int(rng.integers(0, max(h - size, 0) + 1))
    left = int(rng.integers(0, max(w - size, 0) + 1))
    return crop(sample, top, left, size, size)


def crop_containing(sample: Sample, rng: np.random.Generator, size: int, point: np.ndarray) -> Sample:
    """A random `size` crop that holds `point` (x, y), uniformly among the image's windows that do."""
    h, w = sample.size
    x, y = int(point[0]), int(point[1])
    top = int(rng.integers(min(max(y - size + 1, 0), max(h - size, 0)), min(y, max(h - size, 0)) + 1))
    left = int(rng.integers(min(max(x - size + 1, 0), max(w - size, 0)), min(x, max(w - size, 0)) + 1))
    return crop(sample, top, left, size, size)


def hflip(sample: Sample) -> Sample:
    w = sample.size[1]
    points = sample.points.copy()
    points[:, 0] = w - points[:, 0]  # pixel [j, j+1) goes to [w-j-1, w-j): continuous x maps to w - x
    return replace(sample, image=np.ascontiguousarray(sample.image[:, ::-1]), points=points)


def rot90(sample: Sample, turns: int) -> Sample:
    """Rotate by `turns` quarter turns counter-clockwise (np.rot90's direction). Each turn maps pixel (row r,
    column c) of a W-wide image to (W - 1 - c, r): continuous (x, y) goes to (y, W - x). Training crops only: a
    padded sample's valid region (top-left) would not stay top-left."""
    points = sample.points.copy()
    for _ in range(turns % 4):
        w = sample.image.shape[1]
        points = np.stack([points[:, 1], w - points[:, 0]], 1).astype(np.float32)
        sample = replace(sample, image=np.rot90(sample.image))
    return replace(sample, image=np.ascontiguousarray(sample.image), points=points.reshape(-1, 2))


def color_jitter(sample: Sample, rng: np.random.Generator, strength: float = 0.2) -> Sample:
    """Random brightness, contrast and saturation changes of up to +-strength (pixels only)."""
    img = sample.image.astype(np.float32)
    brightness = 1 + rng.uniform(-strength, strength)
    contrast = 1 + rng.uniform(-strength, strength)
    saturation = 1 + rng.uniform(-strength, strength)
    img = img * brightness
    mean = img.mean()
    img = (img - mean) * contrast + mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * saturation + gray
    return replace(sample, image=np.clip(img, 0, 255).astype(np.uint8))


def pad_to_multiple(sample: Sample, multiple: int) -> Sample:
    """Zero-pad bottom and right so both sides are multiples of `multiple`; real content size is kept."""
    h, w = sample.size
    ph, pw = -h % multiple, -w % multiple
    valid = sample.valid_size or (h, w)
    if ph == 0 and pw == 0:
        return replace(sample, valid_size=valid)
    image = cv2.copyMakeBorder(sample.image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return replace(sample, image=image, valid_size=valid)


def to_tensor(sample: Sample) -> torch.Tensor:
    """ImageNet-normalized (3, H, W) float32 tensor; zero padding stays exactly zero after normalization."""
    img = (sample.image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    tensor = torch.from_numpy(img.transpose(2, 0, 1).copy())
    if sample.valid_size is not None:
        vh, vw = sample.valid_size
        tensor[:, vh:, :] = 0
        tensor[:, :, vw:] = 0
    return tensor


#: pytorch-cpn's person box extension: 10% of the width on each side, 15% of the height on top and bottom
BOX_EXTEND = (0.1, 0.15)


def person_window(box: np.ndarray, height: int, width: int, zoom: float = 1.0) -> tuple[float, float, float, float]:
    """(left, top, w, h) of the image region a person crop shows: the box (x, y, w, h) extended by `BOX_EXTEND`,
    widened on one axis to the crop's aspect ratio (height : width), then scaled by `zoom` about its centre."""
    x, y, w, h = (float(v) for v in box)
    crop_w, crop_h = w * (1 + 2 * BOX_EXTEND[0]), h * (1 + 2 * BOX_EXTEND[1])
    crop_w, crop_h = max(crop_w, crop_h * width / height), max(crop_h, crop_w * height / width)
    crop_w, crop_h = crop_w * zoom, crop_h * zoom
    return x + w / 2 - crop_w / 2, y + h / 2 - crop_h / 2, crop_w, crop_h


def person_crop(sample: Sample, box: np.ndarray, height: int, width: int, zoom: float = 1.0) -> Sample:
    """The `person_window` resampled to (height, width) by one affine warp (zero outside the image); points are
    mapped alike and those leaving the crop dropped. `meta["crop_affine"]` is the 2x3 map from image to crop
    coordinates (continuous pixels), so predictions can be mapped back."""
    left, top, crop_w, crop_h = person_window(box, height, width, zoom)
    sx, sy = width / crop_w, height / crop_h
    affine = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]], np.float64)
    # warpAffine works on pixel indices (pixel j centred on j), the zoo on continuous pixels (centred on j + 0.5).
    warp = affine.copy()
    warp[:, 2] += 0.5 * np.array([sx, sy]) - 0.5
    image = cv2.warpAffine(sample.image, warp, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    points = sample.points @ affine[:, :2].T.astype(np.float32) + affine[:, 2].astype(np.float32)
    keep = inside(points, height, width)
    return replace(sample, image=image, points=points[keep].astype(np.float32), ids=sample.ids[keep],
                   scale=sample.scale * float(np.sqrt(sx * sy)), meta={**sample.meta, "crop_affine": affine})


def uncrop_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Crop coordinates back to image coordinates (the inverse of `person_crop`'s `crop_affine`)."""
    inverse = cv2.invertAffineTransform(np.asarray(affine, np.float64))
    return np.asarray(points, np.float64) @ inverse[:, :2].T + inverse[:, 2]
