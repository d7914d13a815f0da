"""Helpers shared by the tests: tiny synthetic images and datasets, a plain training loop, ../shared/assets paths
(tests that need them skip with a stated reason where they are absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data.collate import collate

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT.parent / "shared" / "assets"

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)




def assets_path(*parts: str) -> Path:
    """Path inside ../shared/assets, or skip the test saying what is missing."""
    path = ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data assets beside the checkout), which is absent here")
    return path


def blob_samples(n: int, size: tuple[int, int] = (64, 64), counts: tuple[int, int] = (0, 12), seed: int = 0,
                 encoder=None, radius: float = 2.5) -> list[dict]:
    """Tiny synthetic images: bright soft disks (the "heads") at random points on a dark, noisy background.

    Counts vary per image so a model must look at the image to beat the predict-the-mean baseline.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    samples = []
    for i in range(n):
        k = int(rng.integers(counts[0], counts[1] + 1))
        pts = np.stack([rng.uniform(3, w - 3, k), rng.uniform(3, h - 3, k)], 1).astype(np.float32)
        img = rng.normal(0.15, 0.03, (h, w)).astype(np.float32)
        for x, y in pts:
            img += 0.8 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius**2))
        rgb = torch.from_numpy(np.clip(img, 0, 1)).expand(3, h, w)
        image = (rgb - IMAGENET_MEAN) / IMAGENET_STD
        meta = {"path": f"blob{i}", "index": i, "dataset": f"blobs-{seed}", "point_ids": np.arange(k), "scale": 1.0}
        targets = encoder(pts, (h, w), meta) if encoder is not None else {}
        samples.append({"image": image, "points": torch.from_numpy(pts), "targets": targets, "meta": meta})
    return samples


def blob_batches(samples: list[dict], batch_size: int):
    return [collate(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]


def fit(model, batches: list, optimizer: torch.optim.Optimizer, steps: int, grad_clip: float = 0.0) -> list[float]:
    """`steps` plain training steps of `model`'s own loss, cycling over `batches`; returns each step's loss."""
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss, _ = model.loss(model(batch.images), batch)
        optimizer.zero_grad()
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


def write_mat(path: Path, points: np.ndarray) -> Path:
    """ShanghaiTech's nesting: image_info is a 1x1 cell holding a 1x1 struct {location: Nx2 double, number}
    (test_readers.py checks it against a real ground-truth file). `points` are the zoo's coordinates; the file
    holds MATLAB's, as ShanghaiTech's do."""
    import scipy.io

    from zoo.data.readers import MATLAB_OFFSET

    struct = np.zeros((1, 1), dtype=[("location", object), ("number", object)])
    struct[0, 0]["location"] = np.asarray(points, np.float64).reshape(-1, 2) + MATLAB_OFFSET
    struct[0, 0]["number"] = np.array([[len(points)]], np.uint8)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = struct
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"image_info": cell})
    return path


def write_shanghaitech(root: Path, splits: dict[str, int], size: tuple[int, int] = (64, 64), seed: int = 0,
                       counts: tuple[int, int] = (0, 12)) -> Path:
    """A small dataset of blob images in the ShanghaiTech layout (images/IMG_k.jpg, ground-truth/GT_IMG_k.mat)."""
    import cv2

    for offset, (split, n) in enumerate(splits.items()):
        images, truth = root / f"{split}_data" / "images", root / f"{split}_data" / "ground-truth"
        images.mkdir(parents=True, exist_ok=True)
        truth.mkdir(parents=True, exist_ok=True)
        for k, sample in enumerate(blob_samples(n, size, counts, seed=seed + 1000 * offset), 1):
            rgb = sample["image"] * IMAGENET_STD + IMAGENET_MEAN
            pixels = (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            cv2.imwrite(str(images / f"IMG_{k}.png"), pixels[..., ::-1])
            write_mat(truth / f"GT_IMG_{k}.mat", sample["points"].numpy())
    return root
