"""`zoo data check`: read every sample of a dataset and report counts per split and every problem found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.core.errors import ZooError
from zoo.data.readers import decode_image, inside, read_records

UNSPLIT = "unsplit"  # the `splits` key of records whose dataset names no split (a single list file)


def check_dataset(path: Path, fmt: str = "auto") -> dict:
    """Counts and problems of every split, as the dataset names them. Problems (unreadable images or
    annotations) leave a record out; warnings (format conversions, ignored EXIF orientation, points outside
    the image, which are dropped when loading) do not."""
    records = read_records(Path(path), None, fmt)
    problems, warnings, counts, splits = [], [], [], {}
    outside_total = 0
    for record in records:
        if record.problems:
            problems.extend(record.problems)
            continue
        try:
            image, notes = decode_image(record.image)
        except ZooError as exc:
            problems.append(str(exc))
            continue
        warnings.extend(f"{record.image}: {note}" for note in notes)
        outside = int((~inside(record.points, *image.shape[:2])).sum())
        if outside:
            height, width = image.shape[:2]
            warnings.append(f"{record.source}: {outside} point(s) outside the {width}x{height} image (dropped)")
        outside_total += outside
        counts.append(len(record.points) - outside)
        split = splits.setdefault(record.split or UNSPLIT, {"images": 0, "heads": 0})
        split["images"] += 1
        split["heads"] += counts[-1]
    counts = np.array(counts, dtype=np.int64)
    return {
        "path": str(path),
        "images": len(records),
        "readable_images": int(len(counts)),
        "heads": int(counts.sum()),
        "heads_outside_dropped": outside_total,
        "min": int(counts.min()) if len(counts) else 0,
        "mean": float(counts.mean()) if len(counts) else 0.0,
        "max": int(counts.max()) if len(counts) else 0,
        "splits": splits,
        "problems": problems,
        "warnings": warnings,
    }
