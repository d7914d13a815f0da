"""The three comparison protocols of issue 8. Each one is a list of training jobs; a job whose row is already in
its CSV is skipped, and a job interrupted mid-training continues from its run folder's `last.pt`.

1. cells: VGG cells, N training images drawn (seeded by the draw) from images 1-100, validated on the rest of
   1-100, tested on 101-200, which nothing else ever sees.
2. synthetic: each model on the built-in synthetic crowds under the same budget, plus the harness's speed and
   memory columns for it.
3. street: the real street-crowd set (30 train of which 6 validate, 8 test), fine-tuned from each model's
   synthetic checkpoint or, where the budget says so, trained from random weights over several draws.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.markup import escape

from benchmarks import rows
from benchmarks.budgets import Budget
from zoo.bench import BenchConfig, run_bench
from zoo.core.errors import ZooError
from zoo.core.precision import DTYPE_OF_AMP
from zoo.core.provenance import git_commit
from zoo.data.dataset import resolve_splits
from zoo.data.readers import Record, read_records
from zoo.data.sources import CELLS_DIR
from zoo.data.synthetic import write_ground_truth
from zoo.metrics.names import HEADLINE_METRICS, VIEW_KEYS
from zoo.models.registry import get_entry, get_recipe
from zoo.training.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
STREET_DIR = ROOT.parent / "shared/assets/people_counting_custom/part_B"
CELLS_POOL = 100  # images 1-100 train and validate; 101-200 are the test set only
CELLS_TOTAL = 200


@dataclass
class Setup:
    """Where a suite reads data and writes runs and results, and what it runs on."""

    results: Path = Path("results")
    runs: Path = Path("runs/compare")
    device: str = "cpu"
    amp: str = "bf16"
    channels_last: bool = True  # in training and validation: faster on CPU (docs/results.md, the cells budget)
    cells: Path = CELLS_DIR
    synthetic: str = "synthetic"
    street: Path = STREET_DIR
    bench_resolution: tuple[int, int] = (768, 1024)  # the harness's default, so rows compare with bench.csv
    bench_isolate: bool | None = None  # None: the harness's default (a fresh process per model on CPU)
    console: Console = field(default_factory=Console)


@dataclass(frozen=True)
class Job:
    protocol: str
    model: str
    data: str
    n_train: int
    draw: int
    crops: int  # training crops this run sees (the budget's)
    init_from: str | None = None
    crop_size: int | None = None  # None: the default recipe's

    def key(self, budget: Budget, setup: Setup) -> tuple[str, ...]:
        return rows.key_of({"protocol": self.protocol, "model": self.model, "budget": budget.name,
                            "device": setup.device, "n_train": self.n_train, "draw": self.draw})

    def out(self, budget: Budget, setup: Setup) -> Path:
        return Path(setup.runs) / budget.name / self.protocol / self.model / f"n{self.n_train}-d{self.draw}"


# ---- cells draws ----------------------------------------------------------------------------------------------

def draw_cells(n: int, draw: int, pool: int = CELLS_POOL) -> tuple[list[int], list[int]]:
    """0-based indices into images 1-100 of draw `draw`: N for training, the rest for validation.

    Seeded by the draw alone, so a draw's N = 32 images are the first 32 of its N = 64 (nested designs compare
    the two sizes with less noise).
    """
    if not 0 < n < pool:
        raise ZooError(f"cells: N = {n} must be between 1 and {pool - 1} (images 1-{pool} train and validate)")
    order = np.random.default_rng(draw).permutation(pool)
    return sorted(order[:n].tolist()), sorted(order[n:].tolist())


def cells_draw_dataset(cells_dir: Path, n: int, draw: int, root: Path) -> Path:
    """Draw `draw` of the cells protocol in the ShanghaiTech layout under `root` (images are symlinks, points
    .mat files), with `val_data` so the trainer validates on the rest of 1-100 and tests on 101-200 only."""
    records = read_records(cells_dir, None, "cells")
    if len(records) != CELLS_TOTAL:
        raise ZooError(f"{cells_dir}: expected the {CELLS_TOTAL} VGG cell images, found {len(records)}")
    for record in records:
        if record.problems:
            raise ZooError(record.problems[0])
    train_ids, val_ids = draw_cells(n, draw)
    splits = {"train": [records[i] for i in train_ids], "val": [records[i] for i in val_ids],
              "test": records[CELLS_POOL:]}
    selection = {split: [r.image.name for r in chosen] for split, chosen in splits.items()}
    root = Path(root)
    manifest = root / "selection.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == selection:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        for split, chosen in splits.items():
            write_split(staging / f"{split}_data", chosen)
        (staging / "selection.json").write_text(json.dumps(selection, indent=1))
        shutil.rmtree(root, ignore_errors=True)  # a stale selection (another generator version) is replaced
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def write_split(folder: Path, records: list[Record]) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "ground-truth").mkdir()
    for record in records:
        (folder / "images" / record.image.name).symlink_to(record.image.resolve())
        write_ground_truth(folder / "ground-truth" / f"GT_{record.image.stem}.mat", record.points)


# ---- jobs -----------------------------------------------------------------------------------------------------

def cells_jobs(budget: Budget, setup: Setup) -> list[Job]:
    jobs = []
    for n in budget.cells_sizes:
        for draw in range(budget.cells_draws):
            data = cells_draw_dataset(setup.cells, n, draw, Path(setup.runs) / "data" / f"cells-n{n}-d{draw}")
            jobs += [Job("cells", model, str(data), n, draw, budget.cells_crops) for model in budget.models_at(n)]
    return jobs


def synthetic_jobs(budget: Budget, setup: Setup) -> list[Job]:
    n_train = len(resolve_splits(setup.synthetic).train)
    return [Job("synthetic", model, setup.synthetic, n_train, 0, budget.synthetic_crops) for model in budget.models]


def street_jobs(budget: Budget, setup: Setup) -> list[Job]:
    """The street runs: from random weights, one per draw, or fine-tuning each model's synthetic checkpoint
    (same budget and device), for the models whose synthetic run has finished."""
    n_train = len(resolve_splits(str(setup.street)).train)
    if not budget.street_from_synthetic:
        return [Job("street", model, str(setup.street), n_train, draw, budget.street_crops,
                    crop_size=budget.street_crop_size)
                for draw in range(budget.street_draws) for model in budget.models]
    trained = {row["model"]: row["checkpoint"]
               for row in rows.read_rows(rows.csv_path(setup.results, "synthetic"))
               if (row["budget"], row["device"]) == (budget.name, setup.device)}
    jobs = []
    for model in budget.models:
        if model not in trained:
            setup.console.print(f"street: no synthetic {budget.name} checkpoint of {model} on {setup.device} in "
                                f"{rows.csv_path(setup.results, 'synthetic')}; run the synthetic protocol first")
            continue
        jobs.append(Job("street", model, str(setup.street), n_train, 0, budget.street_crops, trained[model],
                        budget.street_crop_size))
    return jobs


def run_job(job: Job, budget: Budget, setup: Setup) -> dict:
    """Train (or finish training) one job in its run folder and return its CSV row."""
    out = job.out(budget, setup)
    overrides = budget.recipe_overrides(job.protocol, job.crops, job.n_train, job.model, job.crop_size)
    cfg = TrainConfig(job.model, data=job.data, out=str(out), device=setup.device, amp=setup.amp,
                      channels_last=setup.channels_last, seed=job.draw, resume=True, init_from=job.init_from,
                      recipe=overrides, model_kwargs=dict(budget.model_kwargs.get(job.model, {})))
    result = train(cfg, console=setup.console)
    recipe = get_recipe(job.model).override(**overrides)
    history = pd.read_csv(out / "metrics.csv")
    crops_per_epoch = history["step"].diff().fillna(history["step"]) * recipe.batch_size * recipe.crops_per_image
    return {"protocol": job.protocol, "model": job.model, "budget": budget.name, "device": setup.device,
            "n_train": job.n_train, "draw": job.draw, "family": get_entry(job.model).family,
            "epochs": int(history["epoch"].iloc[-1]),
            "images_seen": int(crops_per_epoch.sum()),
            "crop_size": recipe.crop_size, "crops_per_image": recipe.crops_per_image,
            "threads": torch.get_num_threads(), "amp": cfg.amp,  # as the trainer resolved it
            # From the per-epoch training speed the trainer logs: right across resumes, validation excluded.
            "train_seconds": round(float((crops_per_epoch / history["train_images_per_s"]).sum()), 1),
            **{k: result[k] for k in HEADLINE_METRICS},
            **{k: result.get(k) for k in VIEW_KEYS},
            "init_from": job.init_from, "checkpoint": result["checkpoint"],
            "date": pd.Timestamp.now("UTC").isoformat(timespec="seconds"), "git_commit": git_commit()}


def speed_columns(model: str, setup: Setup) -> dict:
    """The harness's cost of `model` at the benchmark resolution, in the dtype the suite trains with."""
    dtype = DTYPE_OF_AMP[setup.amp]
    cfg = BenchConfig(models=[model], resolution=setup.bench_resolution, dtypes=(dtype,), device=setup.device,
                      out=None, isolate=setup.bench_isolate)
    measured = run_bench(cfg, console=setup.console)[0]
    return {"bench_status": measured["status"], "bench_resolution": measured["resolution"],
            "bench_dtype": measured["dtype"],
            **{k: measured[k] for k in rows.SPEED_COLUMNS if k in measured}}


def run_jobs(protocol: str, jobs: list[Job], budget: Budget, setup: Setup,
             extra: Callable[[str, Setup], dict] | None = None) -> int:
    """Run every job whose row is missing; a job that fails with a ZooError is reported and left for a re-run.
    Returns the number of rows written."""
    path = rows.csv_path(setup.results, protocol)
    done = {rows.key_of(row) for row in rows.read_rows(path)}
    written = 0
    for job in jobs:
        label = f"{protocol} {job.model} N={job.n_train} draw {job.draw}"
        if job.key(budget, setup) in done:
            setup.console.print(f"{label}: already in {path}, skipped")
            continue
        setup.console.rule(f"{label} ({budget.name}, {setup.device})")
        try:
            row = run_job(job, budget, setup)
            if extra is not None:
                row.update(extra(job.model, setup))
        except ZooError as exc:
            setup.console.print(f"[red]{escape(label)} failed:[/] {escape(str(exc))}")
            continue
        rows.append_row(path, row, protocol)
        written += 1
    return written


PROTOCOLS = {  # in running order: street fine-tunes the synthetic checkpoints
    "synthetic": lambda budget, setup: run_jobs("synthetic", synthetic_jobs(budget, setup), budget, setup,
                                                speed_columns),
    "street": lambda budget, setup: run_jobs("street", street_jobs(budget, setup), budget, setup),
    "cells": lambda budget, setup: run_jobs("cells", cells_jobs(budget, setup), budget, setup),
}
