"""Readers for every supported annotation layout. All of them yield the one format of the zoo: `Record`s, an
image file plus an (N, 2) float array of head (or object) centres (x, y) in pixels, N possibly 0, and the name of
the split the dataset puts the image in (None when the dataset does not say).

Coordinates are continuous pixels: pixel (row i, column j) covers [j, j+1) x [i, i+1), so a dot drawn on
pixel (i, j) is the point (j + 0.5, i + 0.5). P2PNet text files and the zoo's JSON store such coordinates
directly. ShanghaiTech `.mat` files hold MATLAB coordinates, in which pixel (row i, column j) (1-based) is
centred on (j, i): the reader subtracts `MATLAB_OFFSET` = 0.5 from both axes (see `_read_mat_points`).

Splits, as each dataset names them (`resolve_splits` in zoo.data.dataset turns them into train / val / test):
- shanghaitech: `<root>/<split>_data/images/IMG_k.jpg` + `<root>/<split>_data/ground-truth/GT_IMG_k.mat`
  with the points at `image_info[0,0][0,0][0]`; the split is the folder's name.
- p2pnet: list files whose lines are `IMAGE ANNOTATION` paths (relative to the list file's folder); each
  annotation text file holds one `x y` per line. A FOLDER holding `train.list` and `test.list` (and `val.list`
  if any) is the published layout: each list is the split its name says (a name ending in `_train` etc. too).
  A single list FILE is not split: it is whatever split the user uses it as.
- cells: the VGG cells set, `NNNcell.png` + `NNNdots.png`, one pure red (255, 0, 0) pixel per cell centre; the
  zoo's protocol: images 1-80 train, 81-100 val, 101-200 test.
- coco: COCO keypoints, one record per person (see zoo.data.coco).
- json: the zoo's own format, one file:
      {"images": [{"file": "a.jpg", "points": [[x, y], ...], "split": "train"}, ...]}
  with `file` relative to the JSON file's folder; `split` ("train", "val" or "test") on every image or on none.

Points outside the image: every reader drops them when the image is loaded, as CSRNet's density maps do (a point
off the image adds nothing to its map); P2PNet's published loader would count them. `zoo data check` reports how
many were dropped beside the heads kept.

Images are decoded as OpenCV's `IMREAD_COLOR` does, which is what published P2PNet loads with: grayscale is
replicated to three channels, alpha is dropped (not composited), palettes are expanded and 16-bit samples are
scaled to 8 bits by `>> 8` (PIL's `convert("RGB")` would clip a 16-bit grayscale image instead). EXIF orientation
is IGNORED (`IMREAD_IGNORE_ORIENTATION`): MATLAB's `imread`, in which ShanghaiTech was annotated, and PIL without
`exif_transpose` ignore it too, so the annotations match the stored pixel grid. `zoo data check` warns about each
conversion and each EXIF orientation tag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from zoo.core.errors import ZooError
from zoo.data.records import SPLITS, Record  # noqa: F401  (Record: readers' callers name it here too)

FORMATS = ("shanghaitech", "p2pnet", "cells", "json", "coco")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")




def load_image(path: Path) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB, converted as the module docstring says, or a ZooError naming the file."""
    return decode_image(path)[0]


def decode_image(path: Path) -> tuple[np.ndarray, list[str]]:
    """`load_image`'s image and what it changed or ignored in the file ([] for a plain 8-bit RGB file).

    Decoded once, unchanged (which ignores EXIF orientation), then converted as `IMREAD_COLOR` would."""
    if not Path(path).is_file():
        raise ZooError(f"{path}: file not found")
    # Checked before decoding: libjpeg would otherwise print its own warning for a truncated file.
    if _truncated_jpeg(path):
        raise ZooError(f"{path}: truncated JPEG (no end-of-image marker)")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ZooError(f"{path}: cannot decode image (corrupt or truncated?)")
    notes = []
    if raw.dtype == np.uint16:
        raw = (raw >> 8).astype(np.uint8)
        notes.append("16-bit samples scaled to 8 bits (>> 8)")
    elif raw.dtype != np.uint8:
        raise ZooError(f"{path}: {raw.dtype} samples; only 8- and 16-bit images are read")
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels == 1:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
        notes.append("grayscale replicated to RGB")
    elif channels == 4:
        raw = raw[..., :3]
        notes.append("alpha channel dropped")
    return np.ascontiguousarray(raw[..., ::-1]), notes + _header_notes(path)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of `load_image`'s array, read from the file's header where Pillow knows the format (both
    ignore EXIF orientation), else by decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except (OSError, ValueError):
        return load_image(path).shape[:2]


def _header_notes(path: Path) -> list[str]:
    from PIL import Image  # reads the header only: palette mode and EXIF, which the decoded array no longer shows

    try:
        with Image.open(path) as image:
            mode, orientation = image.mode, image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError):
        return []
    notes = ["palette expanded to RGB"] if mode in ("P", "PA") else []
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} ignored (annotations follow the stored pixels)")
    return notes


EXIF_ORIENTATION = 0x0112


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

#: MATLAB puts pixel (1, 1)'s centre at (1, 1); the zoo at (0.5, 0.5). The street set's annotations follow MATLAB's
#: convention (benchmarks/matlab_offset.py measures it).
MATLAB_OFFSET = 0.5
CELLS_PROTOCOL = ((80, "train"), (100, "val"))  # last image number of each split; the rest is test


def natural_key(path: Path):
    """Sort key: file names in the order their numbers count (IMG_2 before IMG_10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_shanghaitech(root: Path, split: str) -> list[Record]:
    folder = Path(root) / f"{split}_data"
    images = sorted((p for p in (folder / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not images:
        raise ZooError(f"{folder / 'images'}: no images found")
    records = []
    for image in images:
        mat = folder / "ground-truth" / f"GT_{image.stem}.mat"
        records.append(_record_or_problem(image, mat, _read_mat_points, split))
    return records


def _read_mat_points(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ZooError(f"{path}: annotation file missing")
    try:
        info = scipy.io.loadmat(str(path))["image_info"]
        points = info[0, 0][0, 0][0]
    except Exception as exc:  # not a .mat, or not ShanghaiTech's structure
        raise ZooError(f"{path}: cannot read image_info[0,0][0,0][0] ({type(exc).__name__}: {exc})") from None
    points = check_points(points, path)
    return points - np.float32(MATLAB_OFFSET) if len(points) else points


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise ZooError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ZooError(f"{path}: cannot read ({exc.strerror or exc})") from None


def list_split(list_file: Path) -> str | None:
    """The split a list file's name gives it: `train.list`, `part_a_test.list`, ...; None for other names."""
    stem = Path(list_file).stem.lower()
    return next((s for s in SPLITS if stem == s or stem.endswith(("_" + s, "-" + s))), None)


def split_lists(folder: Path) -> list[Path]:
    """The published P2PNet layout: the `*.list` files of a folder whose names give their split."""
    return sorted((p for p in Path(folder).glob("*.list") if list_split(p)), key=lambda p: SPLITS.index(list_split(p)))


def read_p2pnet(path: Path) -> list[Record]:
    """A folder in the published layout (each list its named split) or one list file (no split)."""
    path = Path(path)
    if path.is_dir():
        lists = split_lists(path)
        names = [list_split(p) for p in lists]
        if len(set(names)) != len(names):
            raise ZooError(f"{path}: two list files name the same split ({', '.join(p.name for p in lists)})")
        return [r for p in lists for r in read_p2pnet_list(p, list_split(p))]
    return read_p2pnet_list(path)


def read_p2pnet_list(list_file: Path, split: str | None = None) -> list[Record]:
    list_file = Path(list_file)
    base = list_file.parent
    records = []
    for lineno, line in enumerate(_read_text(list_file).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ZooError(f"{list_file}:{lineno}: expected 'IMAGE ANNOTATION', got {line.strip()!r}")
        record = _record_or_problem(base / parts[0], base / parts[1], _read_txt_points, split)
        record.problems = [f"{list_file}:{lineno}: {p}" for p in record.problems]
        records.append(record)
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
    images = sorted(Path(folder).glob("*cell.png"), key=natural_key)
    if not images:
        raise ZooError(f"{folder}: no NNNcell.png images found")
    return [_record_or_problem(img, img.with_name(img.name.replace("cell.png", "dots.png")), _read_dots,
                               _cells_split(img)) for img in images]


def _cells_split(image: Path) -> str:
    number = int(re.match(r"\d*", image.name).group() or 0)
    return next((split for last, split in CELLS_PROTOCOL if number <= last), "test")


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
        if entry.get("split", "train") not in SPLITS:
            raise ZooError(f"{path}: images[{i}]: split {entry['split']!r} is not one of {', '.join(SPLITS)}")
        record = Record(path.parent / entry["file"], np.zeros((0, 2), np.float32), path, split=entry.get("split"))
        where = f"{path}: images[{i}]"
        try:
            record.points = check_points(np.array(entry["points"], dtype=np.float64), where)
        except (ValueError, TypeError):
            record.problems.append(f"{where}: 'points' must be a list of [x, y] pairs")
        except ZooError as exc:
            record.problems.append(str(exc))
        if not record.image.is_file():
            record.problems.append(f"{where}: image {record.image} not found")
        records.append(record)
    if not records:
        raise ZooError(f"{path}: no images listed")
    if len({r.split is None for r in records}) > 1:
        raise ZooError(f"{path}: 'split' is given for some images but not all; give it on every image or on none")
    return records


def _record_or_problem(image: Path, annotation: Path, read, split: str | None = None) -> Record:
    """A record whose problems are kept (not raised) so `zoo data check` can list every one and the other
    records are still used."""
    try:
        record = Record(image, read(annotation), annotation, split=split)
    except ZooError as exc:
        record = Record(image, np.zeros((0, 2), np.float32), annotation, problems=[str(exc)], split=split)
    if not Path(image).is_file():
        record.problems.append(f"{image}: image not found")
    return record


# ---- dispatch -------------------------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise ZooError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".json":
            return "p2pnet"
        from zoo.data.coco import has_keypoints

        return "coco" if has_keypoints(path) else "json"
    if any(path.glob("*_data/images")):
        return "shanghaitech"
    if any(path.glob("*cell.png")):
        return "cells"
    if split_lists(path):
        return "p2pnet"
    from zoo.data.coco import coco_files

    if coco_files(path):
        return "coco"
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
    if fmt == "coco":
        from zoo.data.coco import read_coco

        return read_coco(path)
    reader = {"p2pnet": read_p2pnet, "cells": read_cells, "json": read_json}[fmt]
    return reader(path)
