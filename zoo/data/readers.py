"""Readers for every supported annotation layout. All of them yield the one format of the zoo: `Record`s, an
image file plus an (N, 2) float array of head (or object) centres (x, y) in pixels, N possibly 0.

Coordinates are continuous pixels: pixel (row i, column j) covers [j, j+1) x [i, i+1), so a dot drawn on
pixel (i, j) is the point (j + 0.5, i + 0.5). ShanghaiTech and P2PNet files store such coordinates directly.

Formats
- shanghaitech: `<root>/<split>_data/images/IMG_k.jpg` + `<root>/<split>_data/ground-truth/GT_IMG_k.mat`
  with the points at `image_info[0,0][0,0][0]`.
- p2pnet: a list file whose lines are `IMAGE ANNOTATION` paths (relative to the list file's folder); each
  annotation text file holds one `x y` per line.
- cells: the VGG cells set, `NNNcell.png` + `NNNdots.png`, one pure red (255, 0, 0) pixel per cell centre.
- json: the zoo's own format, one file:
      {"images": [{"file": "a.jpg", "points": [[x, y], ...]}, ...]}
  with `file` relative to the JSON file's folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from zoo.errors import ZooError

FORMATS = ("shanghaitech", "p2pnet", "cells", "json")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class Record:
    """One annotated image before loading: where it is and where its heads are."""

    image: Path
    points: np.ndarray  # (N, 2) float32 (x, y)
    source: Path  # the annotation file the points came from (named in error messages)
    labels: np.ndarray | None = None  # optional per-point class (keypoint type), aligned with points
    problems: list[str] = field(default_factory=list)


def load_image(path: Path) -> np.ndarray:
    """An 8-bit RGB image as (H, W, 3) uint8, or a ZooError naming the file and what is wrong with it."""
    if not Path(path).is_file():
        raise ZooError(f"{path}: file not found")
    # Checked before decoding: libjpeg would otherwise print its own warning for a truncated file.
    if _truncated_jpeg(path):
        raise ZooError(f"{path}: truncated JPEG (no end-of-image marker)")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ZooError(f"{path}: cannot decode image (corrupt or truncated?)")
    if raw.dtype != np.uint8:
        raise ZooError(f"{path}: {raw.dtype} image ({8 * raw.itemsize}-bit); convert it to 8-bit RGB")
    if raw.ndim == 2 or raw.shape[2] == 1:
        raise ZooError(f"{path}: grayscale image; convert it to 8-bit RGB")
    if raw.shape[2] == 4:
        raise ZooError(f"{path}: RGBA image; drop the alpha channel (convert to 8-bit RGB)")
    return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)


def _truncated_jpeg(path: Path) -> bool:
    # OpenCV decodes a truncated JPEG with a grey bottom and only a warning on stderr; the missing EOI marker is
    # the reliable sign. JPEGs are recognised by their start marker, not their name, so junk named .jpg is
    # reported as undecodable rather than truncated.
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 16))
        return b"\xff\xd9" not in f.read()


def check_points(points: np.ndarray, source: Path | str) -> np.ndarray:
    """Validate an annotation array: (N, 2) finite floats, or a ZooError naming the file (`source`)."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.float32)
    if points.ndim != 2 or points.shape[1] < 2:
        raise ZooError(f"{source}: expected an (N, 2) array of (x, y) points, got shape {points.shape}")
    points = points[:, :2]
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise ZooError(f"{source}: {int(bad.sum())} point(s) with NaN or infinite coordinates "
                       f"(first at row {int(np.argmax(bad))})")
    return points.astype(np.float32)


def inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mask of points inside an image of the given size."""
    return (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)


# ---- formats --------------------------------------------------------------------------------------------------

def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_shanghaitech(root: Path, split: str) -> list[Record]:
    folder = Path(root) / f"{split}_data"
    images = sorted((p for p in (folder / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not images:
        raise ZooError(f"{folder / 'images'}: no images found")
    records = []
    for image in images:
        mat = folder / "ground-truth" / f"GT_{image.stem}.mat"
        records.append(_record_or_problem(image, mat, _read_mat_points))
    return records


def _read_mat_points(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ZooError(f"{path}: annotation file missing")
    try:
        info = scipy.io.loadmat(str(path))["image_info"]
        points = info[0, 0][0, 0][0]
    except Exception as exc:  # not a .mat, or not ShanghaiTech's structure
        raise ZooError(f"{path}: cannot read image_info[0,0][0,0][0] ({type(exc).__name__}: {exc})") from None
    return check_points(points, path)


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise ZooError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ZooError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_p2pnet_list(list_file: Path) -> list[Record]:
    list_file = Path(list_file)
    base = list_file.parent
    records = []
    for lineno, line in enumerate(_read_text(list_file).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ZooError(f"{list_file}:{lineno}: expected 'IMAGE ANNOTATION', got {line.strip()!r}")
        records.append(_record_or_problem(base / parts[0], base / parts[1], _read_txt_points))
    if not records:
        raise ZooError(f"{list_file}: empty list file")
    return records


def _read_txt_points(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ZooError(f"{path}: annotation file missing")
    rows = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            x, y = (float(v) for v in values[:2])  # a line with one value fails to unpack, too
        except ValueError:
            raise ZooError(f"{path}:{lineno}: expected 'x y', got {line.strip()!r}") from None
        rows.append([x, y])
    return check_points(np.array(rows).reshape(-1, 2), path)


def read_cells(folder: Path) -> list[Record]:
    images = sorted(Path(folder).glob("*cell.png"), key=_natural_key)
    if not images:
        raise ZooError(f"{folder}: no NNNcell.png images found")
    return [_record_or_problem(img, img.with_name(img.name.replace("cell.png", "dots.png")), _read_dots)
            for img in images]


def _read_dots(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ZooError(f"{path}: dots annotation missing")
    dots = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if dots is None:
        raise ZooError(f"{path}: cannot decode dots image")
    b, g, r = dots[..., 0], dots[..., 1], dots[..., 2]
    rows, cols = np.nonzero((r == 255) & (g == 0) & (b == 0))
    return np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float32)


def read_json(path: Path) -> list[Record]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        entries = doc["images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ZooError(f"{path}: not a zoo points JSON ({type(exc).__name__}: {exc})") from None
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "points" not in entry:
            raise ZooError(f"{path}: images[{i}] needs 'file' (a path) and 'points'")
        record = Record(path.parent / entry["file"], np.zeros((0, 2), np.float32), path)
        where = f"{path}: images[{i}]"
        try:
            record.points = check_points(np.array(entry["points"], dtype=np.float64), where)
        except (ValueError, TypeError):
            record.problems.append(f"{where}: 'points' must be a list of [x, y] pairs")
        except ZooError as exc:
            record.problems.append(str(exc))
        records.append(record)
    if not records:
        raise ZooError(f"{path}: no images listed")
    return records


def _record_or_problem(image: Path, annotation: Path, read) -> Record:
    """A record whose annotation problem is kept (not raised) so `zoo data check` can list every problem."""
    try:
        return Record(image, read(annotation), annotation)
    except ZooError as exc:
        return Record(image, np.zeros((0, 2), np.float32), annotation, problems=[str(exc)])


# ---- dispatch -------------------------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise ZooError(f"{path}: no such file or folder")
    if path.is_file():
        return "json" if path.suffix.lower() == ".json" else "p2pnet"
    if any(path.glob("*_data/images")):
        return "shanghaitech"
    if any(path.glob("*cell.png")):
        return "cells"
    raise ZooError(f"{path}: cannot tell the dataset format (expected {', '.join(FORMATS)}); the folder may be empty")


def read_records(path: Path, split: str | None = None, fmt: str = "auto") -> list[Record]:
    """All records of a dataset. `split` selects `<split>_data` in the ShanghaiTech layout (every split if None)."""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ZooError(f"unknown dataset format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    if not path.exists():
        raise ZooError(f"{path}: no such file or folder")
    if fmt == "shanghaitech":
        splits = [split] if split else sorted(p.name[: -len("_data")] for p in path.glob("*_data"))
        if not splits:
            raise ZooError(f"{path}: no <split>_data folders")
        return [r for s in splits for r in read_shanghaitech(path, s)]
    reader = {"p2pnet": read_p2pnet_list, "cells": read_cells, "json": read_json}[fmt]
    return reader(path)
