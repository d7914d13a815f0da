"""The fair comparison's runs (docs/protocol.md): the search stage (validation trials on one draw, no test images
in its data) and the final stage (each family's chosen trial at the full budget, one test per draw).

Both stages resume: a job whose row is in its CSV is skipped, an interrupted run continues from its `last.pt`.
Each run folder keeps `fair.json`, the precision and CPU it trains on and every attempt's commit, threads and
wall-clock; a resume in another precision or on another CPU is refused, and so is a row from uncommitted code
unless the setup allows it (the row then says so).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.markup import escape

from benchmarks import rows
from benchmarks.budgets import FairBudget, Trial
from benchmarks.protocols import cells_draw_dataset
from zoo.bench import count_flops
from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.precision import slow_amp_note
from zoo.core.provenance import device_name, git_commit
from zoo.data.dataset import resolve_splits
from zoo.inference.evaluate import evaluate
from zoo.inference.predict import load_inference
from zoo.metrics.localization import nap
from zoo.models.factory import create_model
from zoo.models.registry import get_entry
from zoo.training.trainer import TrainConfig, train

STAGES = ("search", "final")
# Training FLOPs per crop: the forward pass and a backward pass taken as twice the forward (the usual estimate).
TRAIN_FLOPS_PER_FORWARD = 3
# How often a running attempt writes its wall-clock seconds to fair.json.
ATTEMPT_BEAT_SECONDS = 30.0
# How often a run writes its last.pt: the full training state (weights, average, optimizer) of a 128 px epoch of
# 8 steps takes a large share of the epoch to write; a killed run repeats at most this much.
CHECKPOINT_SECONDS = 60.0
# Localization ranks every candidate point a family decodes: decoded at threshold 0.
NAP_THRESHOLD = 0.0


@dataclass
class FairSetup:
    """Where the fair protocol reads cells and writes runs and rows, and what it runs on."""

    cells: Path
    results: Path = Path("results")
    runs: Path = Path("runs/compare")
    device: str = "cpu"
    amp: str = "bf16"  # as resolved; must be the budget's
    channels_last: bool = True
    allow_dirty: bool = False
    console: Console = field(default_factory=Console)


def is_dirty(commit: str) -> bool:
    return commit.endswith("+dirty") or commit == "unknown"


def check_ready(budget: FairBudget, setup: FairSetup) -> None:
    """Refuse a session that cannot produce this budget's rows: another device or precision, a CPU without bf16
    units for a bf16 budget, or uncommitted code without --allow-dirty."""
    if torch.device(setup.device).type != "cpu":
        raise ZooError(f"{budget.name} trains on CPU (docs/protocol.md), not on {setup.device}")
    if budget.amp == "bf16" and slow_amp_note("cpu", "bf16"):
        raise ZooError(f"this CPU has no bf16 units (AVX512_BF16 or AMX): {budget.name} trains in bf16 only and is "
                       "not run here (docs/protocol.md); do other work on this machine")
    if setup.amp != budget.amp:
        raise ZooError(f"{budget.name} trains in {budget.amp} only (fixed before its first draw); --amp gave "
                       f"{setup.amp}")
    commit = git_commit()
    if is_dirty(commit) and not setup.allow_dirty:
        raise ZooError(f"code at {commit}: commit the changes first, or pass --allow-dirty to write rows marked "
                       "allow_dirty = 1 (the report leaves them out)")


# ---- data -------------------------------------------------------------------------------------------------------

def draw_data(budget: FairBudget, setup: FairSetup, draw: int) -> Path:
    """Draw `draw` with its test images (101-200): the final stage's data."""
    return cells_draw_dataset(setup.cells, budget.n_train, draw,
                              Path(setup.runs) / "data" / f"cells-n{budget.n_train}-d{draw}")


def search_data(budget: FairBudget, setup: FairSetup) -> Path:
    """The search draw's training and validation images only: the test images are not in the folder at all."""
    full = draw_data(budget, setup, budget.search_draw)
    root = Path(setup.runs) / "data" / f"search-n{budget.n_train}-d{budget.search_draw}"
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        link = root / f"{split}_data"
        if not link.is_symlink():
            link.symlink_to((full / f"{split}_data").resolve(), target_is_directory=True)
    return root


# ---- one run ------------------------------------------------------------------------------------------------------

@functools.cache
def model_facts(model: str, options: str, crop_size: int) -> tuple[bool, float]:
    """Whether `model`'s count is a map's sum, and its forward GFLOPs on one crop (`options`: its kwargs as JSON)."""
    net = create_model(model, **json.loads(options)).eval()
    with torch.no_grad():
        flops = count_flops(net, torch.zeros(1, 3, crop_size, crop_size))
    return bool(net.count_is_sum), flops / 1e9


def guarded_train(cfg: TrainConfig, setup: FairSetup) -> tuple[dict, dict]:
    """Train (or resume) `cfg` under the run folder's `fair.json`: the precision and CPU a resume must share, and
    one entry per attempt (commit, torch, threads, wall-clock seconds). Returns the trainer's result and the record."""
    out = Path(cfg.out)
    guard = out / "fair.json"
    here = {"amp": setup.amp, "device": setup.device, "device_name": device_name(torch.device(setup.device))}
    record = json.loads(guard.read_text()) if guard.is_file() else {"attempts": []}
    if (out / "last.pt").is_file() and "amp" in record:
        for key, value in here.items():
            if record[key] != value:
                raise ZooError(f"{out}: cannot resume: the run trained with {key} {record[key]!r}, this session "
                               f"has {value!r}; a run keeps one precision and one CPU (docs/protocol.md)")
    record.update(here)
    attempt = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
               "torch": str(torch.__version__), "threads": torch.get_num_threads(), "seconds": 0.0}
    record["attempts"].append(attempt)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    lock = threading.Lock()

    def save():
        with lock:  # the beat thread and this one both write the record
            attempt["seconds"] = round(time.perf_counter() - started, 1)
            atomic_write(guard, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))

    save()
    # A killed process runs no `finally`: the record is kept current while the attempt runs, so the run's
    # wall-clock (a cost column) loses at most one beat per killed attempt.
    stopped = threading.Event()

    def keep_current():
        while not stopped.wait(ATTEMPT_BEAT_SECONDS):
            save()

    beat = threading.Thread(target=keep_current, daemon=True)
    beat.start()
    try:
        result = train(cfg, console=setup.console)
    finally:
        stopped.set()
        beat.join()
        save()
    return result, record


def provenance(record: dict, setup: FairSetup) -> dict:
    """The provenance columns of a run's row, over all its attempts; uncommitted code is refused unless allowed."""
    attempts = record["attempts"]
    commits = list(dict.fromkeys(a["git_commit"] for a in attempts))
    dirty = any(is_dirty(c) for c in commits)
    if dirty and not setup.allow_dirty:
        raise ZooError(f"the run trained at {', '.join(commits)}: uncommitted code; its row is refused without "
                       "--allow-dirty")
    return {"device": record["device"], "device_name": record["device_name"],
            "torch": "/".join(dict.fromkeys(a["torch"] for a in attempts)),
            "threads": "/".join(dict.fromkeys(str(a["threads"]) for a in attempts)), "precision": record["amp"],
            "channels_last": int(setup.channels_last), "git_commit": "/".join(commits), "allow_dirty": int(dirty),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def history_summary(out: Path, batch_size: int, gflops: float, record: dict,
                    extra_seconds: float = 0.0) -> tuple[dict, pd.DataFrame]:
    """Steps, crops, time and FLOPs of a finished run from its metrics.csv and attempts (plus `extra_seconds` of
    work on it outside the trainer); and its validations."""
    history = pd.read_csv(out / "metrics.csv")
    crops = history["step"].diff().fillna(history["step"]) * batch_size
    steps = int(history["step"].iloc[-1])
    wall = sum(a["seconds"] for a in record["attempts"]) + extra_seconds
    threads = max(int(a["threads"]) for a in record["attempts"])
    summary = {"steps": steps, "images_seen": steps * batch_size, "epochs": int(history["epoch"].iloc[-1]),
               # from the per-epoch training speed the trainer logs: right across resumes, validation excluded
               "train_seconds": round(float((crops / history["train_images_per_s"]).sum()), 1),
               "wall_seconds": round(wall, 1), "cpu_hours": round(wall * threads / 3600, 4),
               "gflops_per_crop": round(gflops, 4),
               "train_pflops": round(TRAIN_FLOPS_PER_FORWARD * gflops * steps * batch_size / 1e6, 6)}
    return summary, history.dropna(subset=["val_mae"])


def curve_rows(run_row: str, stage: str, model: str, draw: int, validated: pd.DataFrame, batch_size: int,
               gflops: float) -> list[dict]:
    return [{"row_id": f"{run_row}@{int(r['step'])}", "run_row": run_row, "stage": stage, "model": model,
             "draw": draw, "step": int(r["step"]), "images_seen": int(r["step"]) * batch_size,
             "train_pflops": round(TRAIN_FLOPS_PER_FORWARD * gflops * int(r["step"]) * batch_size / 1e6, 6),
             "val_mae": r["val_mae"], "val_mse": r.get("val_mse")} for _, r in validated.iterrows()]


def append_missing(setup: FairSetup, kind: str, new: list[dict]) -> None:
    """Append the rows of `new` whose ids are not there yet (a run whose last row was lost is written again)."""
    have = {row["row_id"] for row in rows.read_v1(setup.results, kind)}
    fresh = [row for row in new if row["row_id"] not in have]
    if fresh:
        rows.append_v1(setup.results, kind, fresh)


def settings(budget: FairBudget, trial: Trial, recipe: dict, draw: int) -> dict:
    return {"trial": trial.name, "n_train": budget.n_train, "draw": draw, "batch_size": budget.batch_size,
            "crop_size": recipe["crop_size"], "lr": trial.lr, "ema_decay": recipe["ema_decay"],
            "bn_recalibration": recipe["bn_recalibration"],
            "count_calibration": "count scale" if recipe["fit_count_scale"] else "threshold",
            "head_crops": recipe["head_crops"]}


def prepare(budget: FairBudget, model: str, trial: Trial, crop: int, steps: int, validations: int):
    kwargs = dict(budget.model_kwargs.get(model, {}))
    count_is_sum, gflops = model_facts(model, json.dumps(kwargs, sort_keys=True), crop)
    return kwargs, gflops, budget.recipe(trial, crop, steps, validations, count_is_sum)


def attempt(setup: FairSetup, job, *args) -> None:
    """Run one job; a ZooError is reported and the job left for a re-run, so one failure does not stop the others."""
    try:
        job(*args)
    except ZooError as exc:
        setup.console.print(f"[red]failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


# ---- search stage -----------------------------------------------------------------------------------------------

def search_id(budget: FairBudget, model: str, trial: str, crop: int) -> str:
    return f"{budget.name}/search/{model}/{trial}@{crop}"


def run_trial(budget: FairBudget, setup: FairSetup, model: str, trial: Trial, crop: int, round_: str,
              data: Path) -> None:
    row_id = search_id(budget, model, trial.name, crop)
    if row_id in {row["row_id"] for row in rows.read_v1(setup.results, "search")}:
        setup.console.print(f"{row_id}: already in the search log, skipped")
        return
    setup.console.rule(escape(row_id))
    kwargs, gflops, recipe = prepare(budget, model, trial, crop, budget.search_steps, budget.search_validations)
    out = Path(setup.runs) / budget.name / "search" / model / f"{trial.name}@{crop}"
    cfg = TrainConfig(model, data=str(data), out=str(out), device=setup.device, amp=setup.amp,
                      channels_last=setup.channels_last, seed=budget.search_draw, resume=True, recipe=recipe,
                      model_kwargs=kwargs, checkpoint_seconds=CHECKPOINT_SECONDS)
    _, record = guarded_train(cfg, setup)
    origin = provenance(record, setup)
    summary, validated = history_summary(out, budget.batch_size, gflops, record)
    if validated.empty:
        raise ZooError(f"{out}: the trial validated nothing; its data has no validation images")
    best = validated.loc[validated["val_mae"].idxmin()]  # the first of equal values, as the trainer keeps it
    row = {"row_id": row_id, "budget": budget.name, "model": model, "family": get_entry(model).family,
           "headline": int(model in budget.headline), "round": round_, **settings(budget, trial, recipe,
                                                                                  budget.search_draw),
           **summary, "val_mae_best": best["val_mae"], "val_mae_last": validated["val_mae"].iloc[-1],
           "val_mse_best": best.get("val_mse"), "best_step": int(best["step"]),
           "threshold": best.get("val_threshold"), "count_scale": best.get("val_count_scale"), "run": str(out),
           **origin}
    append_missing(setup, "curves", curve_rows(row_id, "search", model, budget.search_draw, validated,
                                               budget.batch_size, gflops))
    rows.append_v1(setup.results, "search", [row])  # last: the row marks the trial done


def chosen_crop(budget: FairBudget, log: list[dict]) -> int | None:
    """The crop size of every later run: a candidate replaces the default only if it lowers the best validation
    MAE of the crop trial for a strict majority of headline families. None until every crop trial is logged."""
    default, *others = budget.crop_sizes
    if not others:
        return default
    scores = {(r["model"], int(r["crop_size"])): float(r["val_mae_best"]) for r in log
              if r["budget"] == budget.name and r["trial"] == budget.crop_trial}
    if any((m, c) not in scores for m in budget.headline for c in budget.crop_sizes):
        return None
    for crop in others:
        wins = sum(scores[(m, crop)] < scores[(m, default)] for m in budget.headline)
        if 2 * wins > len(budget.headline):
            return crop
    return default


def chosen_trial(budget: FairBudget, log: list[dict], model: str, crop: int) -> tuple[Trial, dict] | None:
    """`model`'s trial with the lowest best validation MAE at `crop` (ties: the earlier trial of the budget's
    list), with its search row; None until all its trials are logged."""
    found = {r["trial"]: r for r in log if r["budget"] == budget.name and r["model"] == model
             and int(r["crop_size"]) == crop}
    if any(t.name not in found for t in budget.trials):
        return None
    best = min(budget.trials, key=lambda t: float(found[t.name]["val_mae_best"]))  # min keeps the first of ties
    return best, found[best.name]


def search_needs(budget: FairBudget, log: list[dict]) -> list[str]:
    """The search rows of headline families that the final stage still waits for: the crop round's until it has
    chosen a size, then every trial at that size."""
    have = {r["row_id"] for r in log}
    crop = chosen_crop(budget, log)
    wanted = ([search_id(budget, m, budget.crop_trial, c) for c in budget.crop_sizes for m in budget.headline]
              if crop is None else
              [search_id(budget, m, t.name, crop) for m in budget.headline for t in budget.trials])
    return [row_id for row_id in wanted if row_id not in have]


def run_search(budget: FairBudget, setup: FairSetup, models: tuple[str, ...]) -> int | None:
    """The crop round (headline families), then every trial of every model at the chosen size. Returns the crop
    size, or None when the crop round is incomplete (a model left out, or a failed trial)."""
    data = search_data(budget, setup)
    crop_trial = budget.trial(budget.crop_trial)
    if len(budget.crop_sizes) > 1:
        for crop in budget.crop_sizes:
            for model in (m for m in models if m in budget.headline):
                attempt(setup, run_trial, budget, setup, model, crop_trial, crop, "crop", data)
    crop = chosen_crop(budget, rows.read_v1(setup.results, "search"))
    if crop is None:
        setup.console.print("search: the crop round needs every headline family "
                            f"({', '.join(budget.headline)}) at every crop size before the other trials")
        return None
    setup.console.print(f"search: crop size {crop} px for every family")
    for model in models:
        for trial in budget.trials:
            attempt(setup, run_trial, budget, setup, model, trial, crop, "menu", data)
    return crop


# ---- final stage --------------------------------------------------------------------------------------------------

def final_id(budget: FairBudget, model: str, draw: int) -> str:
    return f"{budget.name}/final/{model}/d{draw}"


def baseline_rows(budget: FairBudget, data: Path, draw: int) -> list[dict]:
    """What no model gives, on the draw's test images, each row labelled with what it computes."""
    splits = resolve_splits(str(data))
    train_counts = np.array([len(r.points) for r in splits.train], dtype=float)
    test = np.array([len(r.points) for r in splits.test], dtype=float)
    mean = float(train_counts.mean())
    made = []
    for key, label, prediction in (
            ("mean-train", f"the mean count of the {len(train_counts)} training images of its draw, for every test "
                           "image", mean),
            ("nobody", "nobody: count 0 for every test image", 0.0)):
        errors = test - prediction
        made.append({"row_id": f"{budget.name}/baseline/{key}/d{draw}", "kind": "baseline", "label": label,
                     "budget": budget.name, "n_train": budget.n_train, "draw": draw,
                     "mae": float(np.abs(errors).mean()), "mse": float(np.sqrt((errors ** 2).mean())),
                     "nae": float((np.abs(errors) / test)[test > 0].mean()), "git_commit": git_commit(),
                     "date": datetime.now(UTC).isoformat(timespec="seconds")})
    return made


def localization(checkpoint: str, data: Path, setup: FairSetup) -> dict:
    """nAP of the tested checkpoint on the test images: every candidate point it decodes, ranked by score."""
    splits = resolve_splits(str(data))
    run = load_inference(checkpoint, device=setup.device)
    found = {}
    evaluate(run.model, splits.test, f"{splits.name}:test", threshold=NAP_THRESHOLD, device=run.device,
             amp=run.amp, channels_last=run.channels_last,
             on_image=lambda p, meta: found.__setitem__(meta["index"], (p.points, p.scores)))
    return nap((*found[i], record.points) for i, record in enumerate(splits.test))


def run_final(budget: FairBudget, setup: FairSetup, models: tuple[str, ...], draws: int) -> None:
    """Draw by draw, every model's chosen trial at the full budget, then its one test."""
    log = rows.read_v1(setup.results, "search")
    crop = chosen_crop(budget, log)
    if crop is None:
        raise ZooError(f"{rows.v1_path(setup.results, 'search')}: the crop round is incomplete; run --stage search")
    choices = {}
    for model in models:
        choice = chosen_trial(budget, log, model, crop)
        if choice is None:
            raise ZooError(f"{rows.v1_path(setup.results, 'search')}: {model} lacks trials at {crop} px; run "
                           "--stage search first")
        choices[model] = choice
    for draw in range(draws):
        data = draw_data(budget, setup, draw)
        append_missing(setup, "cells", baseline_rows(budget, data, draw))
        for model in models:
            attempt(setup, run_final_job, budget, setup, model, draw, data, crop, *choices[model])


def run_final_job(budget: FairBudget, setup: FairSetup, model: str, draw: int, data: Path, crop: int, trial: Trial,
                  source: dict) -> None:
    row_id = final_id(budget, model, draw)
    if row_id in {row["row_id"] for row in rows.read_v1(setup.results, "cells")}:
        setup.console.print(f"{row_id}: already in {rows.v1_path(setup.results, 'cells')}, skipped")
        return
    setup.console.rule(escape(f"{row_id} ({trial.name}, chosen by {source['row_id']})"))
    kwargs, gflops, recipe = prepare(budget, model, trial, crop, budget.steps, budget.validations)
    out = Path(setup.runs) / budget.name / "final" / model / f"n{budget.n_train}-d{draw}"
    cfg = TrainConfig(model, data=str(data), out=str(out), device=setup.device, amp=setup.amp,
                      channels_last=setup.channels_last, seed=draw, resume=True, recipe=recipe, model_kwargs=kwargs,
                      checkpoint_seconds=CHECKPOINT_SECONDS)
    result, record = guarded_train(cfg, setup)
    origin = provenance(record, setup)
    started = time.perf_counter()
    located = localization(result["checkpoint"], data, setup)
    summary, validated = history_summary(out, budget.batch_size, gflops, record, time.perf_counter() - started)
    best = validated.loc[validated["val_mae"].idxmin()]
    tested = pd.read_csv(out / "test_predictions.csv", dtype={"name": str})
    images = [{"row_id": f"{row_id}/{Path(r['name']).name}", "source_row": row_id, "model": model, "draw": draw,
               "image": Path(r["name"]).name, "gt_count": int(r["gt_count"]), "pred_count": float(r["pred_count"])}
              for _, r in tested.iterrows()]
    row = {"row_id": row_id, "kind": "test", "source_row": source["row_id"],
           "label": f"{model}: the search's {trial.name} at the full budget, tested once on images 101-200",
           "budget": budget.name, "model": model, "family": get_entry(model).family,
           "headline": int(model in budget.headline), **settings(budget, trial, recipe, draw), **summary,
           "val_mae": best["val_mae"], "threshold": best.get("val_threshold"),
           "count_scale": best.get("val_count_scale"), **{k: result[k] for k in ("mae", "mse", "nae", "f1_4", "f1_8")},
           **located, "checkpoint": result["checkpoint"], **origin}
    append_missing(setup, "curves", curve_rows(row_id, "final", model, draw, validated, budget.batch_size, gflops))
    append_missing(setup, "images", images)
    rows.append_v1(setup.results, "cells", [row])  # last: the row marks the run done


def run_stage(budget: FairBudget, setup: FairSetup, stage: str, models: tuple[str, ...], draws: int) -> None:
    if stage not in STAGES:
        raise ZooError(f"--stage {stage!r}: choose {' or '.join(STAGES)}")
    check_ready(budget, setup)
    if stage == "search":
        run_search(budget, setup, models)
    else:
        run_final(budget, setup, models, draws)
