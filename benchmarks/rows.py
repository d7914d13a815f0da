"""The comparison's CSV files: one per protocol under `results/`, one row per finished training run.

A row is identified by KEY: a re-run of the suite skips every key already present, which (with the trainer's
`--resume` inside each run folder) makes the whole suite resumable. Rows are appended by rewriting the file
atomically under a lock (zoo.core.csvrows), earlier rows kept byte for byte. Columns are documented in
results/README.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

from zoo.core.csvrows import append_rows
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
