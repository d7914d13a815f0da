"""Synthetic crowds: the embedded default dataset, written to disk in the ShanghaiTech layout.

Every image is a street-like scene of head-and-shoulder figures seen in perspective (heads grow from ~2.5 px
at the top of a 256 px frame to ~9.5 px at the bottom), placed in a few Gaussian clusters plus a scattered
share, with counts from a handful to hundreds. Far people are drawn first so nearer ones occlude them; the
scene then gets a mild blur and sensor noise. The recorded points are the exact head centres.

Coordinates are pixel-area coordinates: pixel column j covers [j, j+1), so its centre is j + 0.5 and the
pixel holding point x is floor(x). Shapes are drawn with OpenCV's fixed-point (1/16 px) API and the points are
snapped to that grid, so a recorded point is exactly the centre of the head drawn for it.

Each image is seeded from (seed, split, index) alone: splits are independent of each other and of their sizes.
"""

from __future__ import annotations

import colorsys
import io
import json
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from zoo.core.errors import ZooError
from zoo.core.paths import data_dir
from zoo.data.readers import MATLAB_OFFSET

GENERATOR_VERSION = 2  # 2: .mat points in MATLAB coordinates (zoo + 0.5), as ShanghaiTech's
DEFAULT_SPLITS = {"train": 80, "val": 20, "test": 20}
DEFAULT_SIZE = (256, 384)  # (H, W)
COUNT_RANGE = (5, 300)  # heads per image, sparse to dense
MANIFEST = "manifest.json"
JPEG_QUALITY = 95
MIN_HEAD_GAP = 1.5  # px; no two recorded centres closer than this

_SUBPIXEL_BITS = 4
_SUBPIXEL = 1 << _SUBPIXEL_BITS
_GOLDEN = (5**0.5 - 1) / 2
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by the crowd-zoo synthetic crowd generator".ljust(116)

# BGR palettes; each pick is jittered so no two people share an exact colour.
_SKIN = np.array([(185, 210, 240), (150, 180, 225), (110, 150, 200), (80, 115, 165), (50, 75, 115),
                  (35, 50, 80)])
_HAIR = np.array([(20, 20, 25), (30, 40, 60), (40, 65, 100), (90, 150, 200), (160, 160, 165), (40, 70, 150)])


def head_radius(y, height: int):
    """Head radius in pixels at row `y` of an image `height` pixels tall: the perspective of the scene."""
    depth = np.clip(np.asarray(y, dtype=np.float64) / height, 0.0, 1.0)
    return (2.5 + 7.0 * depth) * height / 256


def image_count(seed: int, split: str, index: int) -> int:
    """Heads in image `index` of `split`: log-uniform over COUNT_RANGE along a golden-ratio sequence.

    The sequence spreads even a few consecutive images over sparse and dense scenes (any three span at least
    62% of the log range), which random draws would not guarantee.
    """
    offset = np.random.default_rng([seed, _split_code(split)]).random()
    fraction = (offset + index * _GOLDEN) % 1.0
    low, high = np.log(COUNT_RANGE)
    return int(round(np.exp(low + fraction * (high - low))))


def synthesize_image(seed: int, split: str, index: int, size=DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (BGR uint8 image of `size` (H, W), (N, 2) float64 head centres (x, y))."""
    key = [seed, _split_code(split), index]
    points = place_heads(np.random.default_rng([*key, 0]), image_count(seed, split, index), size)
    return render_scene(key, size, points), points


def place_heads(rng: np.random.Generator, count: int, size) -> np.ndarray:
    """`count` head centres: a few Gaussian clusters plus a scattered share that thins out towards the front.

    Heads keep a gap of 0.7 head radii where they can, falling back to MIN_HEAD_GAP when a cluster is full.
    """
    height, width = size
    # Random packing at a minimum gap jams near 0.7 * area / gap^2 heads: stay well below so placement ends.
    count = min(count, int(height * width / (4 * MIN_HEAD_GAP**2)))
    n_clusters = int(rng.integers(1, 5))
    centres = np.column_stack([rng.uniform(0, width, n_clusters),
                               rng.uniform(0.1 * height, height, n_clusters)])
    spreads = rng.uniform(3.0, 9.0, n_clusters) * head_radius(centres[:, 1], height)
    scattered_share = rng.uniform(0.15, 0.5)
    farthest_radius = head_radius(0.0, height)
    placed = np.empty((count, 2))
    n = attempts = 0
    while n < count:
        attempts += 1
        if rng.random() < scattered_share:
            candidate = rng.uniform((0, 0), (width, height))
            # A row's ground area shrinks with depth, so far rows hold more (smaller) people per pixel.
            if rng.random() > farthest_radius / head_radius(candidate[1], height):
                continue
        else:
            k = rng.integers(n_clusters)
            candidate = rng.normal(centres[k], spreads[k])
        candidate = _snap(candidate)
        if not (0 <= candidate[0] < width and 0 <= candidate[1] < height):
            continue
        crowding = 0.7 if attempts < 30 * count else 0.0
        gap = max(MIN_HEAD_GAP, crowding * head_radius(candidate[1], height))
        if n and np.hypot(*(placed[:n] - candidate).T).min() < gap:
            continue
        placed[n] = candidate
        n += 1
    return placed


def render_scene(key: list[int], size, points: np.ndarray) -> np.ndarray:
    """Draw the people at `points` over a background; BGR uint8.

    Background, finish and each person draw from their own streams of `key` (a person's from its position), so
    adding or removing people changes nothing else in the scene; tests rely on that to isolate one person.
    """
    background_rng, finish_rng = (np.random.default_rng([*key, stream]) for stream in (1, 2))
    canvas = render_background(background_rng, size)
    for x, y in points[np.argsort(points[:, 1], kind="stable")]:  # far (top) first: nearer people occlude
        person_rng = np.random.default_rng([*key, 3, round(x * _SUBPIXEL), round(y * _SUBPIXEL)])
        draw_person(canvas, person_rng, x, y, float(head_radius(y, size[0])))
    blurred = cv2.GaussianBlur(canvas, (0, 0), finish_rng.uniform(0.3, 1.1)).astype(np.float32)
    noisy = blurred + finish_rng.normal(0.0, finish_rng.uniform(1.5, 6.0), canvas.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def draw_person(canvas: np.ndarray, rng: np.random.Generator, x: float, y: float, radius: float) -> None:
    """Draw a head-and-shoulders figure whose head is centred exactly at pixel-area point (x, y).

    Every shape is mirror-symmetric about x; the head is an ellipse centred at (x, y) with a hair or hat cap.
    """
    body = _hsv_colour(rng, saturation=(0.0, 0.8), value=(0.1, 0.55))
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))])
    hat = rng.random() < 0.1
    cap = _hsv_colour(rng, (0.6, 1.0), (0.5, 1.0)) if hat else _jitter(rng, _HAIR[rng.integers(len(_HAIR))])
    _ellipse(canvas, x, y + 4.2 * radius, 1.7 * radius, 2.6 * radius, body)  # torso
    _ellipse(canvas, x, y + 2.0 * radius, 2.1 * radius, 1.1 * radius, body)  # shoulders
    _ellipse(canvas, x, y, 0.82 * radius, radius, skin)
    seen_from_behind = rng.random() < 0.3
    _ellipse(canvas, x, y, 0.86 * radius, 1.04 * radius, cap, arc=(0, 360) if seen_from_behind else (165, 375))


def write_ground_truth(path: Path, points: np.ndarray) -> None:
    """Write ShanghaiTech's GT_IMG_k.mat: image_info[0,0][0,0] holds (location (N, 2) float64, number), the
    location in MATLAB coordinates (the zoo's `points` + `MATLAB_OFFSET`), as the reader expects.

    The MAT header normally carries a creation time; a fixed one keeps the files byte-identical across runs.
    """
    location = np.asarray(points, dtype=np.float64).reshape(-1, 2) + MATLAB_OFFSET
    info = np.empty((1, 1), dtype=[("location", "O"), ("number", "O")])
    info[0, 0] = (location, np.array([[len(location)]], dtype=np.uint16))
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = info
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"image_info": cell})
    Path(path).write_bytes(_MAT_HEADER + buffer.getvalue()[len(_MAT_HEADER):])


def generate(root: Path, seed: int = 0, splits: dict[str, int] | None = None, size=DEFAULT_SIZE) -> Path:
    """Write the dataset to `root`: `<split>_data/images/IMG_k.jpg`, `<split>_data/ground-truth/GT_IMG_k.mat`.

    Everything is written to a hidden sibling directory renamed into place at the end, so an interrupted run
    never leaves a complete-looking `root`. An existing synthetic dataset at `root` is replaced; any other
    existing directory is refused rather than deleted.
    """
    root = Path(root)
    manifest = _manifest(seed, DEFAULT_SPLITS if splits is None else splits, size)
    if root.exists() and _read_manifest(root) is None:
        raise ZooError(f"{root}: exists and is not a synthetic dataset (no readable {MANIFEST}); "
                       "remove it or choose another directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        for split, n_images in manifest["splits"].items():
            _write_split(staging / f"{split}_data", seed, split, n_images, size)
        _write_description(staging, manifest)
        _install(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def ensure_synthetic(root: Path | None = None, seed: int = 0, splits: dict[str, int] | None = None,
                     size=DEFAULT_SIZE) -> Path:
    """The synthetic dataset at `root` (default `<data dir>/synthetic`), generated if missing or stale."""
    root = data_dir() / "synthetic" if root is None else Path(root)
    if _read_manifest(root) == _manifest(seed, DEFAULT_SPLITS if splits is None else splits, size):
        return root
    # A first run spends a while here before any epoch starts: say what it is doing, in any terminal or log
    print(f"generating the synthetic crowds under {root} (once)...", file=sys.stderr, flush=True)
    return generate(root, seed, splits, size)


def _write_split(directory: Path, seed: int, split: str, n_images: int, size) -> None:
    (directory / "images").mkdir(parents=True)
    (directory / "ground-truth").mkdir()
    for index in range(n_images):
        image, points = synthesize_image(seed, split, index, size)
        image_path = directory / "images" / f"IMG_{index + 1}.jpg"
        cv2.imwrite(str(image_path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        write_ground_truth(directory / "ground-truth" / f"GT_IMG_{index + 1}.mat", points)


def _install(staging: Path, root: Path) -> None:
    retired = staging.with_name(staging.name + "-old")
    if root.exists():
        root.rename(retired)
    try:
        staging.rename(root)  # atomic; fails if another run installed `root` meanwhile
    except OSError:
        if _read_manifest(root) != _read_manifest(staging):
            raise
        # A concurrent run of the same parameters won the race; its dataset is identical to ours.
    shutil.rmtree(retired, ignore_errors=True)


def _manifest(seed: int, splits: dict[str, int], size) -> dict:
    height, width = size
    if min(height, width) < 64:
        raise ZooError(f"synthetic dataset: image size {height}x{width} is too small (need at least 64x64)")
    for split, n_images in splits.items():
        if not split.isidentifier() or not isinstance(n_images, int) or n_images < 0:
            raise ZooError(f"synthetic dataset: bad split {split!r}: {n_images!r} (need a name, count >= 0)")
    return {"generator": "crowd-zoo synthetic crowds", "version": GENERATOR_VERSION, "seed": int(seed),
            "size": [int(height), int(width)], "splits": {k: int(v) for k, v in splits.items()}}


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _write_description(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    height, width = manifest["size"]
    (root / "README.txt").write_text(
        "Synthetic crowds generated by crowd-zoo (zoo/data/synthetic.py); regenerate rather than edit.\n"
        f"seed {manifest['seed']}, {height}x{width} (HxW) images, splits {manifest['splits']}, "
        f"generator version {manifest['version']}.\n"
        "Layout as ShanghaiTech: <split>_data/images/IMG_k.jpg and <split>_data/ground-truth/GT_IMG_k.mat "
        "with image_info[0,0][0,0][0] the (N, 2) head centres (x, y) in MATLAB coordinates "
        "(pixel (1, 1) centred on (1, 1)).\n")


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())  # stable across processes, unlike hash()


def _snap(point: np.ndarray) -> np.ndarray:
    """Round a pixel-area point to the nearest position OpenCV's fixed-point drawing can hit exactly."""
    return np.round((point - 0.5) * _SUBPIXEL) / _SUBPIXEL + 0.5


def _fixed(value: float) -> int:
    """OpenCV's fixed-point coordinate: its integer coordinates are pixel centres, ours are pixel corners."""
    return int(round((value - 0.5) * _SUBPIXEL))


def _ellipse(canvas, x, y, half_width, half_height, colour, arc=(0, 360)) -> None:
    axes = (int(round(half_width * _SUBPIXEL)), int(round(half_height * _SUBPIXEL)))
    centre = (_fixed(x), _fixed(y))
    cv2.ellipse(canvas, centre, axes, 0, arc[0], arc[1], colour, -1, cv2.LINE_AA, _SUBPIXEL_BITS)


def render_background(rng: np.random.Generator, size) -> np.ndarray:
    """A tilted two-colour gradient with coarse texture and grain, plus rectangles and lines as clutter."""
    height, width = size
    start, end = rng.uniform(40, 220, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:height, 0:width]
    along = np.cos(angle) * cols / width + np.sin(angle) * rows / height
    along = (along - along.min()) / max(np.ptp(along), 1e-9)
    texture = cv2.resize(rng.normal(0, 1, (height // 16 + 2, width // 16 + 2, 3)), (width, height),
                         interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, rng.uniform(1, 8), (height, width, 1))
    image = start + (end - start) * along[..., None] + texture * rng.uniform(4, 20) + grain
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 12))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, x1 = sorted(rng.integers(0, width, 2))
        y0, y1 = sorted(rng.integers(0, height, 2))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y0 + (y1 - y0) // 3)), colour, -1)
        else:
            thickness = int(rng.integers(1, 5))
            cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness, cv2.LINE_AA)
    return canvas


def _hsv_colour(rng: np.random.Generator, saturation, value) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return int(b * 255), int(g * 255), int(r * 255)


def _jitter(rng: np.random.Generator, bgr: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(bgr + rng.normal(0, 12, 3), 0, 255))
