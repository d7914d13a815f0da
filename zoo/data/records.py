"""What every reader produces: one `Record` per annotated image (or per person, for pose data), and the split names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")

@dataclass
class Record:
    """One annotated image before loading: where it is and where its heads are."""

    image: Path
    points: np.ndarray  # (N, 2) float32 (x, y)
    source: Path  # the annotation file the points came from (named in error messages)
    labels: np.ndarray | None = None  # optional per-point class (keypoint type), aligned with points
    problems: list[str] = field(default_factory=list)
    split: str | None = None  # "train", "val" or "test" when the dataset says so
    # Pose data (zoo.data.coco): the record is one person, cropped around `box` (x, y, w, h) when loaded.
    box: np.ndarray | None = None
    mirror_labels: np.ndarray | None = None  # label -> label of the mirrored keypoint type (left <-> right)
    annotation: dict | None = None  # the source entry, for metrics that score against it (OKS)
