"""Datasets for training and evaluation, built from `Record`s of any format.

`resolve_splits` maps a user's `--data` to train / val / test record lists. The validation split is never the test
split: checkpoints are chosen on validation only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data import transforms as T
from zoo.data.readers import Record, inside, load_image, read_records
from zoo.errors import ZooError

# Where `--data cells` looks: the VGG cells set staged beside the checkout, or $ZOO_CELLS.
CELLS_DIR = Path(os.environ.get("ZOO_CELLS",
                                Path(__file__).resolve().parents[2].parent / "shared/assets/cells_vgg/cells"))
VAL_FRACTION = 0.2  # carved from train when a dataset has no validation split of its own


@dataclass
class Splits:
    name: str  # a key identifying the dataset (used by target caches)
    train: list[Record]
    val: list[Record]
    test: list[Record]

    def get(self, split: str) -> list[Record]:
        if split not in ("train", "val", "test"):
            raise ZooError(f"unknown split {split!r}; choose train, val or test")
        return getattr(self, split)


def resolve_splits(spec: str | os.PathLike | None = "synthetic", fmt: str = "auto", seed: int = 0) -> Splits:
    """Train/val/test records for `--data`: `synthetic` (default), `cells`, or a path in any supported format.

    - ShanghaiTech layout: `train_data`, `val_data` (if present) and `test_data`; without `val_data`, a seeded
      20% of train is held out for validation.
    - VGG cells: images 1-100 are the training pool (the last 20 of them validate), 101-200 the test set.
    - Single-list formats (p2pnet list, JSON): a seeded 60/20/20 split.
    """
    spec = "synthetic" if spec is None else str(spec)
    if spec == "synthetic":
        from zoo.data.synthetic import ensure_synthetic

        path = ensure_synthetic()
    elif spec == "cells":
        path = CELLS_DIR
        if not path.is_dir():
            raise ZooError(f"{path}: VGG cells not found; set ZOO_CELLS or pass the folder with --data")
    else:
        path = Path(spec)
    records_fmt = fmt
    if fmt == "auto":
        from zoo.data.readers import detect_format

        records_fmt = detect_format(path)
    key = f"{path.resolve()}:{records_fmt}"
    if records_fmt == "shanghaitech":
        train = read_records(path, "train", records_fmt)
        test = read_records(path, "test", records_fmt) if (path / "test_data").is_dir() else []
        if (path / "val_data").is_dir():
            val = read_records(path, "val", records_fmt)
        else:
            train, val = _hold_out(train, VAL_FRACTION, seed)
        return Splits(key, train, val, test)
    records = read_records(path, None, records_fmt)
    if records_fmt == "cells":
        pool, test = records[:100], records[100:]
        return Splits(key, pool[:80], pool[80:], test)
    rest, test = _hold_out(records, 0.2, seed)
    train, val = _hold_out(rest, 0.25, seed + 1)
    return Splits(key, train, val, test)


def _hold_out(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    if len(records) < 2:
        return records, []
    order = np.random.default_rng(seed).permutation(len(records))
    n_out = max(1, round(len(records) * fraction))
    held = set(order[:n_out].tolist())
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def points_key(points: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(points, np.float32).tobytes()).hexdigest()[:16]


class PointDataset(Dataset):
    """Images and points, transformed jointly; the model family's encoder adds its targets.

    Training items are lists of `crops_per_image` random crops of one image (the collate flattens them);
    evaluation items are whole images padded to the model's stride.
    """

    def __init__(self, records: list[Record], key: str, *, stride: int, train: bool = False, encoder=None,
                 crop_size: int = 128, crops_per_image: int = 1, scale_range=(1.0, 1.0), flip: bool = False,
                 jitter: float = 0.0, seed: int = 0):
        self.records, self.key, self.stride, self.train, self.encoder = records, key, stride, train, encoder
        self.crop_size, self.crops_per_image, self.scale_range = crop_size, crops_per_image, scale_range
        self.flip, self.jitter, self.seed = flip, jitter, seed
        self.epoch = 0
        if train and crop_size % stride:
            raise ZooError(f"crop size {crop_size} must be a multiple of the model's stride {stride}")

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are drawn from (seed, epoch, index): reproducible, and identical after a resume."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> T.Sample:
        record = self.records[index]
        if record.problems:
            raise ZooError(record.problems[0])
        image = load_image(record.image)
        h, w = image.shape[:2]
        keep = inside(record.points, h, w)  # out-of-image points are dropped (a warning in `zoo data check`)
        ids = np.nonzero(keep)[0]
        meta = {"path": str(record.image), "index": index, "dataset": self.key, "source_points": record.points,
                "points_key": points_key(record.points)}
        if record.labels is not None:
            meta["labels"] = record.labels
        return T.Sample(image, record.points[keep], ids, meta=meta)

    def __getitem__(self, index: int):
        sample = self.load(index)
        if not self.train:
            return self._finish(T.pad_to_multiple(sample, self.stride))
        rng = np.random.default_rng((self.seed, self.epoch, index))
        lo, hi = self.scale_range
        scaled = T.random_scale(sample, rng, lo, hi, min_side=self.crop_size)
        crops = []
        for _ in range(self.crops_per_image):
            c = T.random_crop(scaled, rng, self.crop_size)
            if self.flip and rng.random() < 0.5:
                c = T.hflip(c)
            if self.jitter:
                c = T.color_jitter(c, rng, self.jitter)
            crops.append(self._finish(c))
        return crops

    def _finish(self, sample: T.Sample) -> dict:
        meta = dict(sample.meta, point_ids=sample.ids, scale=sample.scale,
                    valid_size=sample.valid_size or sample.size)
        targets = self.encoder(sample.points, sample.size, meta) if self.encoder is not None else {}
        return {"image": T.to_tensor(sample), "points": torch.from_numpy(sample.points), "targets": targets,
                "meta": meta}
