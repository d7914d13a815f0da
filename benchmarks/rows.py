"""The comparison's CSV files: one per protocol under `results/`, one row per finished training run.

A row is identified by KEY: a re-run of the suite skips every key already present, which (with the trainer's
`--resume` inside each run folder) makes the whole suite resumable. Rows are appended by rewriting the file
atomically under a lock (zoo.core.csvrows), earlier rows kept byte for byte. Columns are documented in
docs/results.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

from zoo.core.csvrows import append_rows
from zoo.core.errors import ZooError
from zoo.metrics.localization import NAP_KEYS
from zoo.metrics.names import VIEW_KEYS

KEY = ("protocol", "model", "budget", "device", "n_train", "draw")
COLUMNS = [*KEY, "family", "epochs", "images_seen", "crop_size", "crops_per_image", "threads", "amp", "train_seconds",
           "mae", "mse", "nae", "f1_4", "f1_8", *VIEW_KEYS, "init_from", "checkpoint", "date",
           "git_commit"]
# The harness's cost columns, measured for the synthetic protocol (same models, the benchmark resolution).
SPEED_COLUMNS = ["bench_status", "bench_resolution", "bench_dtype", "params_total", "gflops_per_image",
                 "latency_ms_median", "images_per_s", "train_images_per_s", "peak_rss_mb", "cuda_peak_allocated_mb"]
FILES = {"cells": "cells.csv", "synthetic": "synthetic.csv", "street": "street.csv"}


def columns(protocol: str) -> list[str]:
    return COLUMNS + SPEED_COLUMNS if protocol == "synthetic" else COLUMNS


def csv_path(results: Path, protocol: str) -> Path:
    return Path(results) / FILES[protocol]


def key_of(row: dict) -> tuple[str, ...]:
    """A row's identity as strings, so rows read back from a CSV compare equal to freshly made ones."""
    return tuple(str(row[k]) for k in KEY)


def read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict, protocol: str) -> None:
    """Add one row to `path` (created with its header if absent); a file of another schema is refused."""
    append_rows(path, [row], columns(protocol), schema=f"{protocol} comparison",
                remedy="move it aside to start a new file")


# ---- the fair protocol's files (docs/protocol.md): versioned by name and by a schema column, append-only ----------

PROVENANCE = ["device", "device_name", "torch", "threads", "precision", "channels_last", "git_commit", "allow_dirty",
              "date"]
SETTINGS = ["trial", "n_train", "draw", "steps", "batch_size", "crop_size", "images_seen", "epochs", "lr", "ema_decay",
            "bn_recalibration", "count_calibration", "head_crops"]
COST = ["train_seconds", "wall_seconds", "cpu_hours", "gflops_per_crop", "train_pflops"]
V1_FILES = {
    # one row per search trial: validation scores only (its data holds no test images)
    "search": ("search_v1.csv", "search-v1",
               ["schema", "row_id", "budget", "model", "family", "headline", "round", *SETTINGS, "val_mae_best",
                "val_mae_last", "val_mse_best", "best_step", "threshold", "count_scale", *COST, "run",
                *PROVENANCE]),
    # one row per final run (its one test) or baseline; a value derived later is a new row naming `source_row`
    "cells": ("cells_v1.csv", "cells-v1",
              ["schema", "row_id", "kind", "source_row", "label", "budget", "model", "family", "headline", *SETTINGS,
               "val_mae", "threshold", "count_scale", "mae", "mse", "nae", "f1_4", "f1_8", *NAP_KEYS, *COST,
               "checkpoint", *PROVENANCE]),
    # every validation pass of every run (`run_row`: the search or cells row the run wrote)
    "curves": ("curves_v1.csv", "curves-v1",
               ["schema", "row_id", "run_row", "stage", "model", "draw", "step", "images_seen", "train_pflops",
                "val_mae", "val_mse"]),
    # each final run's count of each test image, for the paired bootstrap
    "images": ("test_images_v1.csv", "test-images-v1",
               ["schema", "row_id", "source_row", "model", "draw", "image", "gt_count", "pred_count"]),
}


def v1_path(results: Path, kind: str) -> Path:
    return Path(results) / V1_FILES[kind][0]


def read_v1(results: Path, kind: str) -> list[dict]:
    return read_rows(v1_path(results, kind))


def append_v1(results: Path, kind: str, new: list[dict]) -> None:
    """Append `new` rows (each with a `row_id`) to the `kind` file; an id already there, or twice in `new`, is
    refused: rows are never replaced, a later value is a new row that names its source."""
    name, schema, columns = V1_FILES[kind]
    path = v1_path(results, kind)
    ids = [str(row["row_id"]) for row in new]
    clash = sorted(({row["row_id"] for row in read_rows(path)} & set(ids)) | {i for i in ids if ids.count(i) > 1})
    if clash:
        raise ZooError(f"{path}: row {clash[0]} is already there; rows are append-only (a later value is a new row "
                       "with its own id naming its source_row)")
    append_rows(path, [{**row, "schema": schema} for row in new], columns, schema=f"{schema} ({name})",
                remedy="this file's rows are append-only: start a new version rather than rewriting it")
