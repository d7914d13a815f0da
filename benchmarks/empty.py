"""What trained models count where no one is: before and after a count floor chosen on validation.

    python -m benchmarks.empty --weights p2pnet=runs/street/p2pnet/best.pt,csrnet_bn=...,cpn=... \
        --out results/empty.csv

Each checkpoint is scored on the splits its training run made (its recorded data, seed and validation share).
Its counts on the validation images (with people) and on validation empty scenes (zoo.data.empty: head-free
windows cut from the validation photos, blank, textured and synthetic backgrounds drawn for the split "val")
choose the floor (zoo.inference.floor.choose_floor); then the test images and the test empty scenes (windows
of the test photos, the generators drawn for "test") are scored once without and once with it. The test images
choose nothing. One row per model, stage (before, after) and kind of empty scene, each with the floor's
validation numbers; `--write-floored` keeps each checkpoint with its floor beside it (`NAME_floor.pt`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks.fair import is_dirty
from zoo.core.csvrows import append_rows
from zoo.core.errors import ZooError
from zoo.core.files import sha256
from zoo.core.provenance import device_name, git_commit
from zoo.data import empty
from zoo.data.records import Record
from zoo.inference.floor import EMPTY_GOAL, FloorChoice, choose_floor
from zoo.inference.predict import Inference, evaluate_records, load_inference, recorded_splits, run_batch
from zoo.models.registry import get_entry
from zoo.models.weights.checkpoint import Checkpoint

SCHEMA = "empty-v1"
SIZE = 256  # px: the side of every empty scene (a quarter of a 1024 px street photo's width)
PER_KIND = 16  # generated images per kind and split
BACKGROUNDS = 32  # head-free windows per split, at most
MARGIN = 24  # px: no head point this close to a background window (a head cut by the border is someone)

COLUMNS = ["schema", "model", "family", "checkpoint", "checkpoint_sha256", "data", "stage", "floor",
           "floor_reached", "split", "kind", "n_images", "mean_count", "max_count", "share_at_least_half",
           "val_empty_mean", "val_mae", "val_mae_spread", "test_mae", "device_name", "torch", "threads",
           "precision", "git_commit", "date"]


def empty_scenes(split: str, photos: list[Record], seed: int, size: int = SIZE,
                 per_kind: int = PER_KIND) -> list[empty.EmptyImage]:
    """Every kind of empty scene for `split` ("val" or "test"): head-free windows of that split's `photos`,
    then the generated kinds drawn for it."""
    scenes = empty.background_crops(photos, size=size, margin=MARGIN, limit=BACKGROUNDS, seed=seed)
    for kind in ("blank", "texture", "synthetic"):
        scenes += empty.generated(kind, per_kind, seed=seed, split=split, size=(size, size))
    return scenes


def counts_of(run: Inference, scenes: list[empty.EmptyImage], batch: int = 8) -> Iterator[tuple[str, float]]:
    """(kind, count) per scene, through the path `zoo predict` takes (so the run's count floor applies)."""
    for start in range(0, len(scenes), batch):
        group = scenes[start:start + batch]
        for scene, (_, _, prediction) in zip(group, run_batch(run, [(s.name, s.image) for s in group]), strict=True):
            yield scene.kind, prediction.count


def summary_rows(counts: list[tuple[str, float]]) -> list[dict]:
    rows = []
    for kind in empty.KINDS:
        values = np.array([c for k, c in counts if k == kind])
        if len(values):
            rows.append({"kind": kind, "n_images": len(values), "mean_count": float(values.mean()),
                         "max_count": float(values.max()), "share_at_least_half": float((values >= 0.5).mean())})
    return rows


def measure(name: str, weights: Path, seed: int, size: int = SIZE,
            per_kind: int = PER_KIND) -> tuple[list[dict], FloorChoice]:
    run = load_inference(weights)
    run.count_floor = 0.0  # "before" is the model without any floor, whatever the file holds
    splits = recorded_splits(run.checkpoint)  # resolved once: every score below uses these very splits
    val = evaluate_records(run, splits.get("val"), f"{splits.name}:val").rows()
    val_empty = [count for _, count in counts_of(run, empty_scenes("val", splits.get("val"), seed, size, per_kind))]
    choice = choose_floor(np.array([r["pred_count"] for r in val]), np.array([r["gt_count"] for r in val]),
                          np.array(val_empty))
    test_scenes = empty_scenes("test", splits.get("test"), seed, size, per_kind)
    base = {"schema": SCHEMA, "model": name, "family": get_entry(run.checkpoint.model_name).family,
            "checkpoint": str(weights), "checkpoint_sha256": sha256(weights), "data": splits.name,
            "floor_reached": int(choice.reached), "val_mae_spread": choice.mae_spread,
            "device_name": device_name(run.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "precision": run.amp, "git_commit": git_commit(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    rows = []
    for stage, floor, val_mae, val_empty_mean in (
            ("before", 0.0, choice.mae_before, choice.empty_mean_before),
            ("after", choice.floor, choice.mae_after, choice.empty_mean_after)):
        run.count_floor = floor
        test_mae = evaluate_records(run, splits.get("test"), f"{splits.name}:test").summary()["mae"]
        for summary in summary_rows(list(counts_of(run, test_scenes))):
            rows.append({**base, "stage": stage, "floor": floor, "split": "test", **summary,
                         "val_empty_mean": val_empty_mean, "val_mae": val_mae, "test_mae": test_mae})
    return rows, choice


def write_floored(weights: Path, floor: float) -> Path:
    checkpoint = Checkpoint.load(weights)
    checkpoint.count_floor = floor
    target = weights.with_name(f"{weights.stem}_floor.pt")
    checkpoint.save(target, for_inference=True)
    return target


def parse_weights(text: str) -> list[tuple[str, Path]]:
    pairs = []
    for item in filter(None, text.split(",")):
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise ZooError(f"--weights {item!r}: expected NAME=CHECKPOINT with an existing file")
        pairs.append((name, Path(path)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="NAME=CHECKPOINT,... (the name labels the rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=SIZE, help="side of every empty scene in pixels")
    parser.add_argument("--per-kind", type=int, default=PER_KIND, help="generated scenes per kind and split")
    parser.add_argument("--out", default="results/empty.csv")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write-floored", action="store_true", help="save NAME_floor.pt beside each checkpoint")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        if is_dirty(git_commit()) and not args.allow_dirty:
            raise ZooError("uncommitted code: commit first, or pass --allow-dirty")
        for name, weights in parse_weights(args.weights):
            rows, choice = measure(name, weights, args.seed, args.size, args.per_kind)
            if args.out:
                append_rows(Path(args.out), rows, COLUMNS, schema=SCHEMA, remedy="write to a new file")
            verdict = (f"floor {choice.floor:g}: validation empties {choice.empty_mean_before:.3g} -> "
                       f"{choice.empty_mean_after:.3g} people, MAE {choice.mae_before:.3g} -> {choice.mae_after:.3g}"
                       f" (spread {choice.mae_spread:.3g})" if choice.reached else
                       f"no floor brings validation empties under {EMPTY_GOAL} within the MAE's spread")
            print(f"{name}: {verdict}")
            if args.write_floored and choice.reached:
                print(f"  wrote {write_floored(weights, choice.floor)}")
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
