"""Datasets for training and evaluation, built from `Record`s of any format.

`resolve_splits` maps a user's `--data` to train / val / test record lists, exactly as the dataset names them
(see zoo.data.readers): a test split is only ever what the dataset calls test. The validation split is never the
test split: checkpoints are chosen on validation only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.core.errors import ZooError
from zoo.data import transforms as T
from zoo.data.readers import SPLITS, Record, detect_format, inside, load_image, read_records
from zoo.data.sources import dataset_path

#: Share of the training images held out (seeded) to validate when a dataset has no validation split of its own
#: and `--val-fraction` is not given; 0 trains on all of them and keeps the last checkpoint.
VAL_FRACTION = 0.2


@dataclass
class Splits:
    name: str  # a key identifying the dataset (used by target caches)
    train: list[Record]
    val: list[Record]
    test: list[Record]
    #: a single unsplit list (one P2PNet list file, a JSON without `split`): whatever split the user uses it as
    unsplit: list[Record] | None = None
    skipped: list[str] = field(default_factory=list)  # problems of the records left out

    def get(self, split: str) -> list[Record]:
        """The split as the dataset (and, for val, `--val-fraction`) defines it; a ZooError when it has none."""
        if split not in SPLITS:
            raise ZooError(f"unknown split {split!r}; choose train, val or test")
        records = getattr(self, split)
        if not records:
            raise ZooError(f"{self.name.rpartition(':')[0]}: the dataset has no {split} split")
        return records

    def select(self, split: str) -> list[Record]:
        """What `--data DATA --split SPLIT` means: all of an unsplit list, else the named split."""
        if self.unsplit is not None:
            return self.unsplit
        return self.get(split)


def resolve_splits(spec: str | os.PathLike | None = "synthetic", fmt: str = "auto", seed: int = 0,
                   val_fraction: float | None = None) -> Splits:
    """Train/val/test records for `--data`: `synthetic` (default), `cells`, or a path in any supported format.

    Each split is the one the dataset names (ShanghaiTech folders, P2PNet list names, JSON `split` fields, the
    cells protocol 1-80 / 81-100 / 101-200). An unsplit list is all training images (and `unsplit` for eval).
    Without a validation split, a seeded `val_fraction` (default `VAL_FRACTION`) of train validates; giving
    `val_fraction` for a dataset that has one is an error. Records with problems are left out (`skipped`).
    """
    path = dataset_path(spec)
    records_fmt = detect_format(path) if fmt == "auto" else fmt
    records = read_records(path, None, records_fmt)
    skipped = [p for r in records if r.problems for p in r.problems]
    usable = [r for r in records if not r.problems]
    named = {split: [r for r in usable if r.split == split] for split in SPLITS}
    unsplit = [r for r in usable if r.split is None]
    if unsplit and len(unsplit) < len(usable):
        raise ZooError(f"{path}: some images have a split and some do not")
    train = unsplit or named["train"]
    val = named["val"]
    if val and val_fraction is not None:
        raise ZooError(f"{path}: the dataset has its own val split; --val-fraction is for datasets without one")
    if not val:
        train, val = _hold_out(train, VAL_FRACTION if val_fraction is None else val_fraction, seed)
    return Splits(f"{path.resolve()}:{records_fmt}", train, val, named["test"], unsplit or None, skipped)


def _hold_out(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    if not 0 <= fraction < 1:
        raise ZooError(f"--val-fraction {fraction:g} must be in [0, 1)")
    if len(records) < 2 or fraction == 0:
        return records, []
    order = np.random.default_rng(seed).permutation(len(records))
    n_out = max(1, round(len(records) * fraction))
    held = set(order[:n_out].tolist())
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def points_key(points: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(points, np.float32).tobytes()).hexdigest()[:16]


#: (height, width) of a person crop: the published CPN input
PERSON_SHAPE = (256, 192)


def is_pose(records: list[Record]) -> bool:
    """Pose data: records are persons to crop (zoo.data.coco), scored by OKS rather than counts."""
    return bool(records) and records[0].box is not None


def keypoint_types(records: list[Record]) -> int:
    """K, the number of keypoint types of pose records."""
    return len(records[0].mirror_labels)


class PointDataset(Dataset):
    """Images and points, transformed jointly; the model family's encoder adds its targets.

    Training items are lists of `crops_per_image` random crops of one image (the collate flattens them);
    evaluation items are whole images padded to the model's stride. `rotate` adds random quarter turns, for
    images with no up (cells under a microscope). `head_crops` is the share of crops placed to hold a head
    drawn at random from the image's (for photos whose heads fill a small part of the frame). A pose record (one
    with a person `box`) is instead cropped around its person to `person_shape` (`transforms.person_crop`): in
    training zoomed by a factor drawn from `scale_range` and mirrored with its keypoint types swapped left <->
    right.
    """

    def __init__(self, records: list[Record], key: str, *, stride: int, train: bool = False, encoder=None,
                 crop_size: int = 128, crops_per_image: int = 1, scale_range=(1.0, 1.0), flip: bool = False,
                 rotate: bool = False, jitter: float = 0.0, head_crops: float = 0.0, seed: int = 0,
                 person_shape: tuple[int, int] = PERSON_SHAPE):
        self.records, self.key, self.stride, self.train, self.encoder = records, key, stride, train, encoder
        self.crop_size, self.crops_per_image, self.scale_range = crop_size, crops_per_image, scale_range
        self.person_shape = person_shape
        self.flip, self.rotate, self.jitter, self.seed = flip, rotate, jitter, seed
        self.head_crops = head_crops
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
        if self.records[index].box is not None:
            return self._person(sample, self.records[index], index)
        if not self.train:
            return self._finish(T.pad_to_multiple(sample, self.stride))
        rng = np.random.default_rng((self.seed, self.epoch, index))
        lo, hi = self.scale_range
        scaled = T.random_scale(sample, rng, lo, hi, min_side=self.crop_size)
        crops = []
        for _ in range(self.crops_per_image):
            # Drawn only when asked for, so runs without head crops keep their random streams.
            if self.head_crops and len(scaled.points) and rng.random() < self.head_crops:
                c = T.crop_containing(scaled, rng, self.crop_size, scaled.points[rng.integers(len(scaled.points))])
            else:
                c = T.random_crop(scaled, rng, self.crop_size)
            if self.flip and rng.random() < 0.5:
                c = T.hflip(c)
            if self.rotate:
                c = T.rot90(c, int(rng.integers(4)))
            if self.jitter:
                c = T.color_jitter(c, rng, self.jitter)
            crops.append(self._finish(c))
        return crops

    def _person(self, sample: T.Sample, record: Record, index: int):
        if not self.train:
            return self._finish(T.person_crop(sample, record.box, *self.person_shape))
        rng = np.random.default_rng((self.seed, self.epoch, index))
        crops = []
        for _ in range(self.crops_per_image):
            c = T.person_crop(sample, record.box, *self.person_shape, zoom=rng.uniform(*self.scale_range))
            if self.flip and rng.random() < 0.5:
                c = T.hflip(c)
                c.meta = {**c.meta, "labels": record.mirror_labels[record.labels]}
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
