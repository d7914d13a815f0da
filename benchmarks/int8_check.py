"""Is int8 good enough? A checkpoint's counts on a real test set in float32 (torch) and int8 (onnxruntime, static
quantization calibrated on the same dataset's training images), image by image.

    python -m benchmarks.int8_check --weights runs/p2pnet/best.pt --data cells [--split val] [--out results/int8.csv]

One row per checkpoint: the scored split's (test unless `--split val`) total count and MAE in both precisions, the
total's relative difference, the mean and largest per-image relative difference, and `accepted` (every count within
1% of float32 in total and on the mean image; the rule of issue 14). The int8 file is written beside nothing: a
temporary directory.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from zoo.core.csvrows import append_rows
from zoo.core.provenance import environment
from zoo.data.dataset import resolve_splits
from zoo.deploy.export import checkpoint_metadata
from zoo.deploy.quantize import CALIBRATION_IMAGES, CALIBRATION_PERCENTILE, export_int8, method
from zoo.deploy.runtime import OnnxRunner
from zoo.inference.evaluate import evaluate
from zoo.inference.predict import load_inference

COLUMNS = ["date", "git_commit", "device_name", "cpu_threads", "torch", "model", "weights", "data", "images",
           "quantization", "calibration_images", "count_fp32", "count_int8", "total_rel_diff", "mean_image_rel_diff",
           "max_image_rel_diff", "mae_fp32", "mae_int8", "accepted"]
TOLERANCE = 0.01


def check(weights: str, data: str, calibration_images: int, split: str = "test",
          percentile: float = CALIBRATION_PERCENTILE) -> dict:
    run = load_inference(weights, amp="off")
    splits = resolve_splits(data)
    key = f"{splits.name}:{split}"
    with tempfile.TemporaryDirectory(prefix="zoo-int8-check-") as folder:
        int8 = Path(folder) / "int8.onnx"
        export_int8(run.model, int8, data, threshold=run.threshold, images=calibration_images,
                    percentile=percentile, metadata=checkpoint_metadata(weights))
        runner = OnnxRunner(int8)
        scored = {precision: evaluate(run.model, splits.get(split), key, threshold=run.threshold, forward=forward)
                  for precision, forward in (("fp32", None), ("int8", runner))}
    counts = {p: np.array([r["pred_count"] for r in e.rows()]) for p, e in scored.items()}
    per_image = np.abs(counts["int8"] - counts["fp32"]) / np.maximum(np.abs(counts["fp32"]), 1.0)
    total = {p: float(c.sum()) for p, c in counts.items()}
    total_diff = (total["int8"] - total["fp32"]) / max(abs(total["fp32"]), 1.0)
    return {**environment(torch.device("cpu")), "model": run.model.registry_name, "weights": weights,
            "data": data if split == "test" else f"{data} ({split} split)",
            "images": len(per_image), "quantization": method(percentile), "calibration_images": calibration_images,
            "count_fp32": total["fp32"], "count_int8": total["int8"], "total_rel_diff": total_diff,
            "mean_image_rel_diff": per_image.mean(), "max_image_rel_diff": per_image.max(),
            "mae_fp32": scored["fp32"].summary()["mae"], "mae_int8": scored["int8"].summary()["mae"],
            "accepted": bool(abs(total_diff) <= TOLERANCE and per_image.mean() <= TOLERANCE)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, action="append", help="a checkpoint (repeat for several)")
    parser.add_argument("--data", default="cells", help="dataset: its --split is scored, its train calibrates")
    parser.add_argument("--split", default="test", choices=("val", "test"),
                        help="the split scored: val for checkpoints whose test images stay unseen (search trials)")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument("--percentile", type=float, action="append",
                        help=f"upper percentile of the activation ranges (default {CALIBRATION_PERCENTILE}); repeat "
                             "to compare several, a row each")
    parser.add_argument("--out", type=Path, default=Path("results/int8.csv"))
    args = parser.parse_args(argv)
    for weights, percentile in itertools.product(args.weights, args.percentile or [CALIBRATION_PERCENTILE]):
        row = check(weights, args.data, args.calibration_images, args.split, percentile)
        print(", ".join(f"{k} {row[k]:.4g}" if isinstance(row[k], float) else f"{k} {row[k]}" for k in COLUMNS[5:]
                        if k != "quantization"))
        append_rows(args.out, [row], COLUMNS, schema="benchmarks.int8_check.COLUMNS", remedy="move the file aside")
    return 0


if __name__ == "__main__":
    sys.exit(main())
