"""`zoo data check`: read every sample of a dataset and report counts and every problem found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.readers import inside, load_image, read_records
from zoo.errors import ZooError


def check_dataset(path: Path, fmt: str = "auto") -> dict:
    """Counts and problems of every split. Out-of-image points are warnings (they are dropped when loading);
    unreadable images or annotations are problems."""
    records = read_records(Path(path), None, fmt)
    problems, warnings, counts = [], [], []
    for record in records:
        problems.extend(record.problems)
        try:
            image = load_image(record.image)
        except ZooError as exc:
            problems.append(str(exc))
            continue
        if record.problems:
            continue
        outside = int((~inside(record.points, *image.shape[:2])).sum())
        if outside:
            height, width = image.shape[:2]
            warnings.append(f"{record.source}: {outside} point(s) outside the {width}x{height} image (dropped)")
        counts.append(len(record.points) - outside)
    counts = np.array(counts, dtype=np.int64)
    return {
        "path": str(path),
        "images": len(records),
        "readable_images": int(len(counts)),
        "heads": int(counts.sum()),
        "min": int(counts.min()) if len(counts) else 0,
        "mean": float(counts.mean()) if len(counts) else 0.0,
        "max": int(counts.max()) if len(counts) else 0,
        "problems": problems,
        "warnings": warnings,
    }
