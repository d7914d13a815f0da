"""The fair protocol's runs (benchmarks/fair.py) on the tiny test family and miniature cells: one budget for every
family, the search's rules, test images kept out of the search, provenance and append-only rows, resuming."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from support import tiny_family  # noqa: F401  (registers tiny_density)

from benchmarks import fair, rows
from benchmarks.budgets import FAIR_V1, FairBudget, Trial
from zoo.core.errors import ZooError
from zoo.data.dataset import resolve_splits
from zoo.metrics.localization import NAP_KEYS
from zoo.models.registry import Recipe, get_entry, get_recipe, is_registered

TINY = FairBudget(name="tiny-fair", headline=("tiny_density",), extras=(), n_train=4, steps=8, batch_size=2,
                  crop_sizes=(16, 32), trials=(Trial("slow", 3e-3, True), Trial("fast", 1e-2, False)),
                  crop_trial="slow", search_share=0.5, draws=1, validations=2, search_validations=1, ema_share=1.0,
                  amp="off")


@pytest.fixture
def setup(tmp_path, mini_cells, one_thread, monkeypatch):
    monkeypatch.setattr(fair, "git_commit", lambda: "abc1234")  # a clean tree, whatever the checkout's state
    return fair.FairSetup(cells=mini_cells, results=tmp_path / "results", runs=tmp_path / "runs", amp="off",
                          channels_last=False, console=Console(quiet=True))


def test_fair_v1_gives_every_family_the_same_steps_crops_augmentation_and_trials():
    assert FAIR_V1.headline == ("p2pnet", "csrnet_bn", "cpn") and FAIR_V1.extras == ("cpn_r18",)
    assert all(is_registered(m) for m in FAIR_V1.models)
    assert get_entry("cpn").family == "heatmap" and FAIR_V1.search_steps * 4 == FAIR_V1.steps == 3840
    assert len(FAIR_V1.trials) == 4 and FAIR_V1.crop_sizes[0] == 128 and FAIR_V1.batch_size == 8
    for trial in FAIR_V1.trials:
        recipes = {(model, sums): get_recipe(model).override(**FAIR_V1.recipe(trial, 128, FAIR_V1.steps, 20, sums))
                   for model in FAIR_V1.models for sums in (True, False)}
        for recipe in recipes.values():
            steps = recipe.epochs * (FAIR_V1.n_train * recipe.crops_per_image // recipe.batch_size)
            assert steps == 3840 and recipe.batch_size * recipe.crops_per_image == 8 and recipe.crop_size == 128
            assert (recipe.lr, recipe.backbone_lr, recipe.optimizer) == (trial.lr, trial.lr, "adam")
            assert (recipe.scale_range, recipe.flip, recipe.color_jitter) == (Recipe().scale_range, True, 0.2)
            assert recipe.bn_recalibration == 4 and recipe.head_crops == 0 and recipe.test_views == 1
            assert recipe.eval_every == 24 and recipe.warmup_epochs == 1
            assert recipe.ema_decay == (pytest.approx(1 - 8 / 3840) if trial.ema else 0.0)
        # The only difference a family's model makes: how its count is calibrated on validation.
        assert recipes[("p2pnet", True)].fit_count_scale and not recipes[("p2pnet", False)].fit_count_scale
        assert recipes[("p2pnet", False)].threshold_candidates and not recipes[("cpn", True)].threshold_candidates
    with pytest.raises(ZooError, match="not whole epochs"):
        FAIR_V1.recipe(FAIR_V1.trials[0], 128, 3841, 20, True)


def search_row(model: str, trial: str, crop: int, mae: float) -> dict:
    return {"budget": "fair-v1", "model": model, "trial": trial, "crop_size": str(crop), "val_mae_best": str(mae),
            "row_id": f"fair-v1/search/{model}/{trial}@{crop}"}


def test_the_crop_size_changes_only_for_a_majority_of_headline_families_and_ties_keep_the_first_trial():
    p2p, csr, cpn = FAIR_V1.headline
    log = [search_row(p2p, "lr3e-4", 128, 3.0), search_row(p2p, "lr3e-4", 256, 2.0),
           search_row(csr, "lr3e-4", 128, 3.0), search_row(csr, "lr3e-4", 256, 4.0),
           search_row(cpn, "lr3e-4", 128, 3.0)]
    assert fair.chosen_crop(FAIR_V1, log) is None  # cpn's 256 px trial is missing
    assert fair.chosen_crop(FAIR_V1, [*log, search_row(cpn, "lr3e-4", 256, 3.0)]) == 128  # 1 of 3: a tie is no win
    assert fair.chosen_crop(FAIR_V1, [*log, search_row(cpn, "lr3e-4", 256, 2.9)]) == 256  # 2 of 3
    trials = [search_row(p2p, t.name, 128, mae) for t, mae in zip(FAIR_V1.trials, (2.5, 2.0, 2.0, 3.0), strict=True)]
    assert fair.chosen_trial(FAIR_V1, trials[:3], p2p, 128) is None  # a trial not logged yet
    trial, source = fair.chosen_trial(FAIR_V1, trials, p2p, 128)
    assert trial.name == "lr3e-4" and source["row_id"] == "fair-v1/search/p2pnet/lr3e-4@128"
    assert fair.chosen_trial(FAIR_V1, trials, p2p, 256) is None
    # What the final stage still waits for: the crop round, then every trial of every family at the chosen size.
    assert fair.search_needs(FAIR_V1, log) == ["fair-v1/search/cpn/lr3e-4@256"]
    waiting = fair.search_needs(FAIR_V1, [*log, search_row(cpn, "lr3e-4", 256, 3.0), *trials])
    assert waiting == [f"fair-v1/search/{m}/{t.name}@128" for m in (csr, cpn) for t in FAIR_V1.trials
                       if t.name != "lr3e-4"]  # the crop round's trial at 128 px is one of them


def test_search_then_final_write_provenance_rows_and_the_search_never_sees_a_test_image(setup, monkeypatch):
    fair.run_stage(TINY, setup, "search", TINY.headline, 1)
    search = pd.read_csv(rows.v1_path(setup.results, "search"))
    # Crop round at 16 and 32 px, then the other trial at the chosen size.
    crop = fair.chosen_crop(TINY, search.astype(str).to_dict("records"))
    assert sorted(search["trial"] + "@" + search["crop_size"].astype(str)) == sorted(
        ["slow@16", "slow@32", f"fast@{crop}"])
    assert set(search["steps"]) == {4} and set(search["images_seen"]) == {8} and set(search["epochs"]) == {2}
    assert set(search["schema"]) == {"search-v1"} and set(search["git_commit"]) == {"abc1234"}
    assert search[["device_name", "torch", "threads", "precision", "wall_seconds", "train_pflops"]].notna().all().all()
    assert set(search["precision"]) == {"off"} and set(search["allow_dirty"]) == {0}
    data = fair.search_data(TINY, setup)
    assert resolve_splits(str(data)).test == [] and len(resolve_splits(str(data)).val) == 96
    assert not any(setup.runs.rglob("search/**/test_metrics.json"))

    monkeypatch.setattr(fair, "train", lambda *a, **k: pytest.fail("a logged trial was trained again"))
    fair.run_stage(TINY, setup, "search", TINY.headline, 1)
    monkeypatch.undo()
    monkeypatch.setattr(fair, "git_commit", lambda: "abc1234")

    fair.run_stage(TINY, setup, "final", TINY.headline, 1)
    cells = pd.read_csv(rows.v1_path(setup.results, "cells"))
    (test,) = cells[cells["kind"] == "test"].to_dict("records")
    chosen, source = fair.chosen_trial(TINY, search.astype(str).to_dict("records"), "tiny_density", crop)
    assert (test["trial"], test["source_row"], test["crop_size"]) == (chosen.name, source["row_id"], crop)
    assert (test["steps"], test["images_seen"], test["epochs"], test["batch_size"]) == (8, 16, 4, 2)
    assert all(0 <= test[k] <= 1 for k in NAP_KEYS) and math.isfinite(test["mae"])
    assert test["cpu_hours"] == pytest.approx(test["wall_seconds"] * 1 / 3600, abs=1e-4)
    images = pd.read_csv(rows.v1_path(setup.results, "images"))
    assert len(images) == 100 and set(images["source_row"]) == {test["row_id"]}
    assert (images["pred_count"] - images["gt_count"]).abs().mean() == pytest.approx(test["mae"], rel=1e-5)
    # Baselines: labelled with what they compute, and computed from the draw's annotations.
    splits = resolve_splits(str(fair.draw_data(TINY, setup, 0)))
    mean = sum(len(r.points) for r in splits.train) / 4
    baseline = cells[cells["row_id"] == "tiny-fair/baseline/mean-train/d0"].iloc[0]
    assert "mean count of the 4 training images" in baseline["label"]
    assert baseline["mae"] == pytest.approx(sum(abs(len(r.points) - mean) for r in splits.test) / 100)
    curves = pd.read_csv(rows.v1_path(setup.results, "curves"))
    assert list(curves[curves["run_row"] == test["row_id"]]["step"]) == [4, 8]


def test_rows_are_append_only(tmp_path):
    row = {"row_id": "x/1", "model": "m"}
    rows.append_v1(tmp_path, "images", [row])
    before = rows.v1_path(tmp_path, "images").read_text()
    with pytest.raises(ZooError, match="x/1 is already there; rows are append-only"):
        rows.append_v1(tmp_path, "images", [{**row, "model": "other"}])
    with pytest.raises(ZooError, match="x/2"):
        rows.append_v1(tmp_path, "images", [{"row_id": "x/2"}, {"row_id": "x/2"}])
    assert rows.v1_path(tmp_path, "images").read_text() == before


def test_a_lost_row_is_rebuilt_from_the_run_and_a_resume_on_another_cpu_or_precision_is_refused(setup):
    data = fair.search_data(TINY, setup)
    trial = TINY.trials[1]
    fair.run_trial(TINY, setup, "tiny_density", trial, 16, "menu", data)
    path = rows.v1_path(setup.results, "search")
    first = pd.read_csv(path)
    path.unlink()  # as if the process died between the run's end and its row
    fair.run_trial(TINY, setup, "tiny_density", trial, 16, "menu", data)
    again = pd.read_csv(path)
    assert again["val_mae_best"].tolist() == first["val_mae_best"].tolist()
    run = setup.runs / TINY.name / "search" / "tiny_density" / "fast@16"
    record = json.loads((run / "fair.json").read_text())
    assert len(record["attempts"]) == 2 and again["wall_seconds"].iloc[0] >= first["wall_seconds"].iloc[0]
    (run / "fair.json").write_text(json.dumps({**record, "device_name": "Another CPU (AVX2)"}))
    path.unlink()
    with pytest.raises(ZooError, match="cannot resume: the run trained with device_name 'Another CPU"):
        fair.run_trial(TINY, setup, "tiny_density", trial, 16, "menu", data)


def test_a_running_attempt_keeps_its_wall_clock_in_the_record_so_a_killed_one_still_counts(setup, monkeypatch,
                                                                                             tmp_path):
    # A killed process runs no `finally`: what the record says while `train` still runs is all a kill leaves.
    seen = []

    def slow_train(cfg, console=None):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            attempts = json.loads((Path(cfg.out) / "fair.json").read_text())["attempts"]
            if attempts[-1]["seconds"] > 0:
                seen.append(attempts[-1]["seconds"])
                return {}
            time.sleep(0.01)
        return {}

    monkeypatch.setattr(fair, "train", slow_train)
    monkeypatch.setattr(fair, "ATTEMPT_BEAT_SECONDS", 0.05)
    cfg = fair.TrainConfig("tiny_density", data="unused", out=str(tmp_path / "run"))
    _, record = fair.guarded_train(cfg, setup)
    assert seen and 0 < seen[0] <= record["attempts"][-1]["seconds"]


def test_a_session_that_cannot_make_the_budgets_rows_is_refused(setup, monkeypatch):
    bf16 = replace(TINY, amp="bf16")
    monkeypatch.setattr(fair, "slow_amp_note", lambda device, amp: "no bf16 here")
    with pytest.raises(ZooError, match="no bf16 units"):
        fair.check_ready(bf16, setup)
    with pytest.raises(ZooError, match="trains in off only"):
        fair.check_ready(TINY, fair.FairSetup(cells=setup.cells, amp="bf16"))
    with pytest.raises(ZooError, match="trains on CPU"):
        fair.check_ready(TINY, fair.FairSetup(cells=setup.cells, amp="off", device="cuda"))
    monkeypatch.setattr(fair, "git_commit", lambda: "abc1234+dirty")
    with pytest.raises(ZooError, match="abc1234\\+dirty: commit the changes first, or pass --allow-dirty"):
        fair.check_ready(TINY, setup)
    setup.allow_dirty = True
    fair.check_ready(TINY, setup)
    fair.run_trial(TINY, setup, "tiny_density", TINY.trials[1], 16, "menu", fair.search_data(TINY, setup))
    row = pd.read_csv(rows.v1_path(setup.results, "search")).iloc[0]
    assert row["allow_dirty"] == 1 and row["git_commit"] == "abc1234+dirty"
