"""Peak memory and time of `zoo predict` on large images, tiled and whole (issue 14, tiled inference).

    python -m benchmarks.tiling_memory [--models p2pnet,csrnet_bn] [--out results/tiling.csv] [--limit-gib 16]

Every case runs in a fresh process (`--case JSON`), whose peak resident set (Linux VmHWM, as `zoo bench` reads it)
is then the case's own: loading the image file and `zoo.inference.predict.predict_images` on it, i.e. `zoo predict`
without writing its CSV and overlay. The models are the registered ones with their output layers seeded so that
they find many heads (random output layers find none, and there would be nothing to compare). The input is the synthetic
test scene 0 resized to each resolution and written as a PNG.

Whole-image inference is estimated before it is run: whole-image cases at 1024 to 2048 px squares come first, a
line through their peaks (memory grows with the pixels) estimates each large image's, and a whole-image case
estimated above `--limit-gib` or above three quarters of the memory available now is recorded as skipped with
its estimate instead of being run. Rows are appended to `--out` atomically (columns: docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

from zoo.bench.measure import peak_rss_mb, scene
from zoo.cli.predict import MAX_PIXELS
from zoo.core.csvrows import append_rows
from zoo.core.provenance import device_name, git_commit
from zoo.data import transforms as T
from zoo.deploy.fold import prepare_for_inference
from zoo.inference.predict import Inference, predict_images
from zoo.inference.tiling import resolve_tiling, spans
from zoo.metrics.counting import match_points
from zoo.models.factory import create_model
from zoo.models.registry import get_recipe

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["date", "git_commit", "device_name", "cpu_threads", "torch", "model", "resolution", "megapixels", "mode",
           "tile", "overlap", "windows", "status", "note", "seconds", "peak_rss_mb", "estimated_peak_rss_mb", "count",
           "n_points", "count_rel_diff_vs_whole", "f1_vs_whole"]
CALIBRATION = ((1024, 1024), (1536, 1536), (2048, 2048))  # whole-image cases that estimate the large ones
LARGE = ((2160, 3840), (4320, 7680))
EXTRA_TILES = {(2160, 3840): 1024}  # a smaller tile than the default's, for the memory / time trade-off
MATCH_RADIUS = 0.5  # px; F1 within 0.5 px bounds F1@4 from below and stays cheap on P2PNet's 4 px anchor lattice


def seeded_model(name: str):
    """The registered model with output layers that find many heads: P2PNet's proposals spread around their anchors
    with about half of them above 0.5, CSRNet's density about one head per cell and varying with the image."""
    torch.manual_seed(0)
    model = create_model(name)
    with torch.no_grad():
        if hasattr(model, "classification"):
            model.regression[-1].weight.normal_(0, 2e-3)
            model.classification[-1].bias.zero_()
        else:
            model.output.weight.mul_(100)
            model.output.bias.fill_(1.0)
    return prepare_for_inference(model.eval())


def run_case(case: dict) -> dict:
    """One case, in this (fresh) process."""
    model = seeded_model(case["model"])
    run = Inference(model, {}, torch.device("cpu"), threshold=get_recipe(case["model"]).threshold, amp="off",
                    channels_last=False)
    tiling = resolve_tiling(model, case["tile"], None, MAX_PIXELS) if case["mode"] == "tiled" else None
    start = time.perf_counter()
    ((_, image, prediction),) = predict_images(run, [Path(case["image"])], batch_size=1, tiling=tiling)
    seconds = time.perf_counter() - start
    np.save(case["points"], prediction.points)
    height, width = image.shape[:2]
    windows = len(spans(height, tiling.tile, tiling.overlap)) * len(spans(width, tiling.tile, tiling.overlap)) \
        if tiling else 1
    return {"status": "ok", "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb()),
            "count": prediction.count, "n_points": len(prediction.points), "windows": windows,
            "tile": tiling.tile if tiling else None, "overlap": tiling.overlap if tiling else None}


def run_isolated(case: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tiling_memory", "--case", json.dumps(case)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode == -signal.SIGKILL:
        return {"status": "oom", "note": "the process was killed (SIGKILL): out of memory, most likely"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()
        return {"status": "error", "note": tail[-1] if tail else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def fit_peak(rows: list[dict]):
    """Peak MiB as a function of pixels, the line through the whole-image calibration rows; None without two."""
    done = [r for r in rows if r["status"] == "ok"]
    if len(done) < 2:
        return None
    slope, intercept = np.polyfit([r["megapixels"] for r in done], [r["peak_rss_mb"] for r in done], 1)
    return lambda megapixels: intercept + slope * megapixels


def compare(tiled: dict, whole: dict | None, points: dict) -> None:
    """Add the tiled row's agreement with the whole-image row of its model and image, when that one ran."""
    if whole is None or whole["status"] != "ok" or tiled["status"] != "ok":
        return
    tiled["count_rel_diff_vs_whole"] = f"{(tiled['count'] - whole['count']) / max(abs(whole['count']), 1e-9):.2e}"
    found, truth = np.load(points[id(tiled)]), np.load(points[id(whole)])
    tiled["f1_vs_whole"] = round(2 * match_points(found, truth, MATCH_RADIUS) / max(len(found) + len(truth), 1), 5)


def benchmark(models: list[str], out: Path, limit_mb: float) -> list[dict]:
    base = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
            "device_name": device_name(torch.device("cpu")), "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__}
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-tiling-") as folder:
        images, points = {}, {}

        def measure(model: str, size: tuple[int, int], mode: str, tile: int | None = None, **known) -> dict:
            if size not in images:
                images[size] = Path(folder) / f"{size[0]}x{size[1]}.png"
                cv2.imwrite(str(images[size]), np.ascontiguousarray(T.resize(scene("test", 0), *size).image[..., ::-1]))
            row = {**base, "model": model, "resolution": f"{size[0]}x{size[1]}",
                   "megapixels": round(size[0] * size[1] / 1e6, 2), "mode": mode, **known}
            if row.get("status") != "skipped":
                path = Path(folder) / f"{len(rows)}.npy"
                row.update(run_isolated({"model": model, "image": str(images[size]), "mode": mode, "tile": tile,
                                         "points": str(path)}))
                points[id(row)] = path
            return row

        def record(row: dict) -> dict:
            # Each row as soon as it is complete: an interrupted run keeps the rows it measured.
            append_rows(out, [row], COLUMNS, schema="tiling benchmark", remedy="move it aside or pass another --out")
            print(json.dumps({k: row.get(k) for k in COLUMNS[5:]}), flush=True)
            rows.append(row)
            return row

        for model in models:
            calibration = [record(measure(model, size, "whole")) for size in CALIBRATION]
            estimate = fit_peak(calibration)
            for size in LARGE:
                megapixels = size[0] * size[1] / 1e6
                expected = round(estimate(megapixels)) if estimate else None
                room = min(limit_mb, 0.75 * available_mb())
                if expected is None or expected > room:
                    note = (f"estimated {expected} MiB > {room:.0f} MiB allowed (--limit-gib, or 3/4 of the memory "
                            "available)" if expected else "no estimate")
                    whole = record(measure(model, size, "whole", status="skipped", estimated_peak_rss_mb=expected,
                                           note=note))
                else:
                    whole = record(measure(model, size, "whole", estimated_peak_rss_mb=expected))
                extra = [EXTRA_TILES[size]] if size in EXTRA_TILES else []
                for tile in [None, *extra]:  # None: the tile of zoo predict's default --max-pixels
                    tiled = measure(model, size, "tiled", tile)
                    compare(tiled, whole, points)
                    record(tiled)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiling_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="p2pnet,csrnet_bn", help="comma-separated registered names")
    parser.add_argument("--out", default="results/tiling.csv", help="CSV the rows are appended to")
    parser.add_argument("--limit-gib", type=float, default=16.0,
                        help="whole-image cases estimated above this are skipped, not run (default 16)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a worker process: run this one case, print its row
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    benchmark(args.models.split(","), Path(args.out), args.limit_gib * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
