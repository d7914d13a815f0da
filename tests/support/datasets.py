"""Small datasets written to disk in the readers' layouts, whole or with one kind of breakage each."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io

from support import write_mat

HEIGHT, WIDTH = 48, 64


def write_image(path: Path, seed: int = 0, channels: int = 3, dtype=np.uint8) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, np.iinfo(dtype).max, (HEIGHT, WIDTH, channels), dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image.squeeze(2) if channels == 1 else image)
    return path


def random_points(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.stack([rng.uniform(0, WIDTH, count), rng.uniform(0, HEIGHT, count)], 1)


def write_shanghaitech(root: Path, counts: dict[str, list[int]], seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """`<split>_data/images/IMG_k.jpg` + `ground-truth/GT_IMG_k.mat` (k = 1, 2, ...) with the given head counts;
    returns the points written, keyed by (split, k)."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, split_counts in counts.items():
        for k, count in enumerate(split_counts, 1):
            write_image(root / f"{split}_data" / "images" / f"IMG_{k}.jpg", seed=k)
            written[split, k] = random_points(rng, count)
            write_mat(root / f"{split}_data" / "ground-truth" / f"GT_IMG_{k}.mat", written[split, k])
    return written


def image_path(root: Path, k: int, suffix: str = ".jpg") -> Path:
    return root / "train_data" / "images" / f"IMG_{k}{suffix}"


def mat_path(root: Path, k: int) -> Path:
    return root / "train_data" / "ground-truth" / f"GT_IMG_{k}.mat"


def write_junk(path: Path) -> Path:
    path.write_bytes(b"definitely not an image or a MAT-file")
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def delete(path: Path) -> Path:
    path.unlink()
    return path


def replace_image(root: Path, k: int, suffix: str, **kwargs) -> Path:
    delete(image_path(root, k))
    return write_image(image_path(root, k, suffix), **kwargs)


def write_mat_without_image_info(path: Path) -> Path:
    scipy.io.savemat(str(path), {"points": np.ones((3, 2))})
    return path


# name: (how to break image k of a valid train split, returning the file the message must name; a word it must hold)
BREAKAGES = {
    "corrupt image": (lambda root, k: write_junk(image_path(root, k)), "decode"),
    "truncated JPEG": (lambda root, k: truncate(image_path(root, k)), "truncated"),
    "missing annotation": (lambda root, k: delete(mat_path(root, k)), "missing"),
    "unreadable .mat": (lambda root, k: write_junk(mat_path(root, k)), "cannot read"),
    ".mat without image_info": (lambda root, k: write_mat_without_image_info(mat_path(root, k)), "image_info"),
    "NaN points": (lambda root, k: write_mat(mat_path(root, k), [[1.0, 2.0], [np.nan, 3.0]]), "NaN"),
}


def write_broken_shanghaitech(root: Path, breakages: list[str]) -> tuple[list[tuple[Path, str]], int]:
    """One broken train image per breakage, then one good image; returns what to expect and the good head count."""
    written = write_shanghaitech(root, {"train": [5] * len(breakages) + [7]})
    expected = [(BREAKAGES[name][0](root, k), BREAKAGES[name][1]) for k, name in enumerate(breakages, 1)]
    return expected, len(written["train", len(breakages) + 1])


# ---- formats --------------------------------------------------------------------------------------------------
