"""The comparison's CSV files: one per protocol under `results/`, one row per finished training run.

A row is identified by KEY: a re-run of the suite skips every key already present, which (with the trainer's
`--resume` inside each run folder) makes the whole suite resumable. Rows are appended by rewriting the file
atomically, earlier rows kept byte for byte. Columns are documented in results/README.md.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from zoo.checkpoint import atomic_write
from zoo.errors import ZooError

KEY = ("protocol", "model", "budget", "device", "n_train", "draw")
COLUMNS = [*KEY, "family", "epochs", "images_seen", "crop_size", "crops_per_image", "threads", "train_seconds",
           "mae", "mse", "nae", "f1_4", "f1_8", "init_from", "checkpoint", "date", "git_commit"]
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
    path = Path(path)
    fields = columns(protocol)
    old = path.read_text() if path.is_file() else ""
    header = next(csv.reader(io.StringIO(old)), None)
    if header is not None and header != fields:
        raise ZooError(f"{path}: its header is not the {protocol} comparison schema (results/README.md); "
                       "move it aside to start a new file")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    if header is None:
        writer.writeheader()
    writer.writerow({k: "" if v is None else v for k, v in row.items()})
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(old + buffer.getvalue()))
