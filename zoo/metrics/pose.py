"""OKS keypoint metrics for pose data, by pycocotools (the COCO keypoint challenge's own evaluation).

Every person crop's prediction (K keypoints in crop pixels, row k = type k) is mapped back to image pixels with
the crop's affine and scored with its mean keypoint confidence, as pytorch-cpn's test does. Ground truth is the
records' own COCO entries (so a subset of a COCO file scores as such). Reported: AP (OKS 0.50:0.95), AP50, AP75,
AR (OKS 0.50:0.95, 20 detections per image). Counting metrics mean nothing for person crops and are not given.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.types import Prediction
from zoo.data.readers import Record
from zoo.data.transforms import uncrop_points
from zoo.metrics.names import POSE_METRICS

SUMMARY_KEYS = POSE_METRICS


class PoseEvaluator:
    """Same use as `metrics.Evaluator`: `add` per sample (its meta holds the record index and crop affine),
    then `summary()`; the records give the ground truth."""

    def __init__(self, records: list[Record]):
        self.records = records
        self._results: list[dict] = []

    def add(self, prediction: Prediction, gt_points=None, size=None, name: str = "", meta: dict | None = None):
        record = self.records[meta["index"]]
        points = uncrop_points(prediction.points, meta["crop_affine"])
        keypoints = np.concatenate([points, np.ones((len(points), 1))], 1)
        self._results.append({"image_id": record.annotation["image_id"], "category_id": 1,
                              "keypoints": keypoints.ravel().tolist(), "score": float(np.mean(prediction.scores)),
                              "annotation_id": record.annotation["id"], "name": name or str(record.image)})

    def summary(self) -> dict:
        if not self._results:
            raise ZooError("evaluator: no persons were added, so there is nothing to summarize")
        stats = oks_stats(ground_truth(self.records), self._results)
        return {"images": len(self._results), **dict(zip(SUMMARY_KEYS, stats, strict=True))}

    def selection_loss(self) -> float:
        """Lower is better: what the trainer picks checkpoints on (1 - AP)."""
        return 1.0 - self.summary()["ap"]

    def write_csv(self, path: str | os.PathLike) -> None:
        table = pd.DataFrame([{"name": r["name"], "annotation_id": r["annotation_id"], "score": r["score"],
                               "keypoints": " ".join(f"{v:.2f}" for v in r["keypoints"])} for r in self._results])
        atomic_write(Path(path), lambda tmp: table.to_csv(tmp, index=False))


def ground_truth(records: list[Record]) -> dict:
    """A COCO keypoints document of the records' persons and their images."""
    images, annotations = {}, []
    for record in records:
        entry = record.annotation
        images[entry["image_id"]] = {"id": entry["image_id"], "height": entry["height"], "width": entry["width"],
                                     "file_name": record.image.name}
        annotations.append({"id": entry["id"], "image_id": entry["image_id"], "category_id": 1, "iscrowd": 0,
                            "bbox": entry["bbox"], "area": entry["area"], "keypoints": entry["keypoints"],
                            "num_keypoints": entry["num_keypoints"]})
    return {"images": list(images.values()), "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}]}


def oks_stats(truth: dict, results: list[dict]) -> tuple[float, ...]:
    """AP, AP50, AP75, AR of `results` (COCO result dicts) against `truth` (a COCO keypoints document)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its own table
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        dt = gt.loadRes([{k: r[k] for k in ("image_id", "category_id", "keypoints", "score")} for r in results])
        evaluation = COCOeval(gt, dt, iouType="keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return float(stats[0]), float(stats[1]), float(stats[2]), float(stats[5])
