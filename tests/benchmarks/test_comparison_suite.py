"""The comparison suite (benchmarks/): cells draws, resumable protocols, the report, fine-tuning from a checkpoint.

Runs the real protocol code on the test-only tiny family and tiny generated data, so it takes seconds.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from support import (
    tiny_family,  # noqa: F401  (registers tiny_density)
    write_shanghaitech,
)

from zoo.core.errors import ZooError
from zoo.data.dataset import resolve_splits
from zoo.data.readers import read_records
from zoo.models.registry import Recipe, get_recipe
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the benchmarks/ scripts live beside zoo/

from benchmarks import protocols, report, rows  # noqa: E402
from benchmarks.budgets import BUDGETS, Budget  # noqa: E402

TINY = Budget(name="tiny", models=("tiny_density",), cells_sizes=(4,), cells_draws=2, crops_per_image=1,
              cells_crops=8, synthetic_crops=8, street_crops=8, street_crop_size=24, validations=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: a second thread only waits



@pytest.fixture
def setup(tmp_path, mini_cells):
    return protocols.Setup(results=tmp_path / "results", runs=tmp_path / "runs", amp="off", cells=mini_cells,
                           bench_resolution=(32, 32), bench_isolate=False, console=Console(quiet=True))


def test_draws_are_seeded_nested_and_inside_images_1_to_100():
    for n in (32, 64):
        train_ids, val_ids = protocols.draw_cells(n, 3)
        assert (train_ids, val_ids) == protocols.draw_cells(n, 3)
        assert len(train_ids) == n and sorted(train_ids + val_ids) == list(range(100))
    assert protocols.draw_cells(32, 0)[0] != protocols.draw_cells(32, 1)[0]
    assert set(protocols.draw_cells(32, 2)[0]) < set(protocols.draw_cells(64, 2)[0])
    with pytest.raises(ZooError, match="N = 100"):
        protocols.draw_cells(100, 0)


def test_draw_dataset_tests_on_101_to_200_only_with_the_original_points(mini_cells, tmp_path):
    root = protocols.cells_draw_dataset(mini_cells, 8, 1, tmp_path / "draw")
    splits = resolve_splits(str(root))
    numbers = {s: [int(re.match(r"\d+", r.image.name).group()) for r in getattr(splits, s)]
               for s in ("train", "val", "test")}
    assert numbers["test"] == list(range(101, 201))
    assert sorted(numbers["train"] + numbers["val"]) == list(range(1, 101))
    assert numbers["train"] == [i + 1 for i in protocols.draw_cells(8, 1)[0]]
    originals = {r.image.name: r.points for r in read_records(mini_cells, None, "cells")}
    for record in splits.train + splits.val + splits.test:
        np.testing.assert_array_equal(record.points, originals[record.image.name])
    again = protocols.cells_draw_dataset(mini_cells, 8, 1, tmp_path / "draw")
    assert again == root and (root / "selection.json").stat().st_mtime_ns > 0


def test_cells_protocol_writes_one_row_per_draw_and_skips_them_on_rerun(setup, monkeypatch):
    protocols.PROTOCOLS["cells"](TINY, setup)
    path = rows.csv_path(setup.results, "cells")
    written = pd.read_csv(path)
    assert list(written["draw"]) == [0, 1] and set(written["budget"]) == {"tiny"}
    # 8 crops over N = 4 images is 2 epochs of one batch of 4: 8 images seen, as the budget says.
    assert list(written["epochs"]) == [2, 2] and list(written["images_seen"]) == [8, 8]
    assert written["mae"].notna().all() and list(written["amp"]) == ["off", "off"]  # the setup's, as trained

    def no_training(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(protocols, "train", no_training)
    protocols.PROTOCOLS["cells"](TINY, setup)
    assert len(pd.read_csv(path)) == 2


def test_a_model_trained_on_larger_crops_sees_as_many_pixels_not_as_many_crops():
    budget = Budget(name="tiny-large", models=("small", "large"), cells_sizes=(8,), cells_draws=1, crops_per_image=1,
                    cells_crops=1600, synthetic_crops=0, street_crops=0, street_crop_size=256, validations=5,
                    model_recipes={"large": {"crop_size": 2 * Recipe().crop_size}})
    small, large = (budget.recipe_overrides("cells", 1600, 8, model) for model in ("small", "large"))
    assert (small["epochs"], small["crop_size"]) == (200, Recipe().crop_size)
    assert (large["epochs"], large["crop_size"], large["eval_every"]) == (50, 2 * Recipe().crop_size, 10)
    # A protocol that already crops at the model's size (street, 256 px) gives it the protocol's crop count.
    assert budget.recipe_overrides("street", 1600, 8, "large", crop_size=256)["epochs"] == 200
    assert "a model given larger crops sees as many pixels" in report.budget_text(budget)


def test_a_budgets_validation_choices_reach_the_trainer_and_the_report(setup):
    chosen = Budget(name="tiny-chosen", models=("tiny_density",), cells_sizes=(4,), cells_draws=1,
                    crops_per_image=1, cells_crops=8, synthetic_crops=0, street_crops=0, street_crop_size=24,
                    validations=1, model_recipes={"tiny_density": {"lr": 0.05, "rotate": True}},
                    model_kwargs={"tiny_density": {"width": 4}}, test_views={"cells": 8})
    protocols.PROTOCOLS["cells"](chosen, setup)
    run = protocols.Job("cells", "tiny_density", "", 4, 0, chosen.cells_crops).out(chosen, setup)
    record = Checkpoint.load(run / "last.pt")
    assert record.recipe["rotate"] and record.recipe["lr"] == 0.05 and record.recipe["test_views"] == 8
    assert record.model_kwargs == {"width": 4} and record.training["channels_last"]
    # The row's 8-view MAE is the one the run's test wrote, and a second score: not the single view's.
    row = pd.read_csv(rows.csv_path(setup.results, "cells")).iloc[0]
    tested = json.loads((run / "test_metrics.json").read_text())
    assert row["test_views"] == 8 and row["mae_views"] == pytest.approx(tested["mae_views"])
    assert tested["mae"] == pytest.approx(row["mae"]) and tested["mae_views"] != tested["mae"]
    markdown = report.write_report(setup.results, {"tiny-chosen": chosen}).read_text()
    assert "except what this budget chose on validation (tiny_density lr=0.05, rotate=True, width=4)" in markdown
    assert "MAE, 8 views" in markdown and "N = 4, mean count of 8 views: best is tiny_density" in markdown
    assert "torch threads: 1; autocast (`--amp`): off." in markdown
    assert "per run; the final cells test also counts each image as the mean of 8 views." in markdown


def test_a_lost_row_is_rebuilt_from_its_finished_run_without_training_again(setup):
    protocols.PROTOCOLS["cells"](TINY, setup)
    path = rows.csv_path(setup.results, "cells")
    before = pd.read_csv(path)
    run = protocols.Job("cells", "tiny_density", "", 4, 1, TINY.cells_crops).out(TINY, setup)
    weights = Checkpoint.load(run / "last.pt").weights
    path.unlink()  # as if the suite died between the end of training and the CSV write
    protocols.PROTOCOLS["cells"](TINY, setup)
    after = pd.read_csv(path)
    assert all(torch.equal(weights[k], Checkpoint.load(run / "last.pt").weights[k]) for k in weights)
    columns = ["model", "n_train", "draw", "epochs", "images_seen", "mae", "mse", "f1_4", "f1_8"]
    pd.testing.assert_frame_equal(before[columns], after[columns])


def test_street_fine_tunes_the_synthetic_checkpoint_and_synthetic_rows_carry_speed(setup, tmp_path, monkeypatch):
    monkeypatch.setattr("zoo.bench.run.compute_ceiling", lambda device, dtype: 1.0)  # a 4096^3 product, seconds
    setup.synthetic = str(write_shanghaitech(tmp_path / "synth", {"train": 4, "val": 2, "test": 2}, seed=1))
    setup.street = write_shanghaitech(tmp_path / "street", {"train": 5, "test": 2}, seed=2)
    protocols.PROTOCOLS["street"](TINY, setup)
    assert not rows.csv_path(setup.results, "street").exists()  # nothing to fine-tune yet
    protocols.PROTOCOLS["synthetic"](TINY, setup)
    protocols.PROTOCOLS["street"](TINY, setup)
    synthetic = pd.read_csv(rows.csv_path(setup.results, "synthetic")).iloc[0]
    street = pd.read_csv(rows.csv_path(setup.results, "street")).iloc[0]
    assert synthetic["bench_status"] == "ok" and synthetic["images_per_s"] > 0
    assert synthetic["bench_resolution"] == "32x32" and synthetic["params_total"] > 0
    assert street["init_from"] == synthetic["checkpoint"] and street["n_train"] == 4  # one of 5 validates
    assert Checkpoint.load(street["checkpoint"]).training["init_from"] == synthetic["checkpoint"]


def test_a_street_budget_from_random_weights_trains_each_draw_and_reports_their_spread(setup, tmp_path):
    setup.street = write_shanghaitech(tmp_path / "street", {"train": 5, "test": 2}, seed=2)
    budget = replace(TINY, name="tiny-street", cells_sizes=(), synthetic_crops=0, street_from_synthetic=False,
                     street_draws=2)
    assert budget.protocols == ("street",)
    protocols.PROTOCOLS["street"](budget, setup)  # no synthetic rows needed
    street = pd.read_csv(rows.csv_path(setup.results, "street"))
    assert list(street["draw"]) == [0, 1] and street["init_from"].isna().all()
    seeds = [Checkpoint.load(c).training["seed"] for c in street["checkpoint"]]
    assert seeds == [0, 1]
    markdown = report.write_report(setup.results, {"tiny-street": budget}).read_text()
    (ours,) = table_after(markdown, "3. Real street crowds")
    assert ours[2] == "2/2" and ours[3] == f"{street['mae'].mean():.2f} ± {street['mae'].std(ddof=1):.2f}"
    assert ours[-1] == "random weights"
    assert "None: every run this budget calls for is in the CSVs." in markdown


def test_init_from_starts_a_new_run_from_the_checkpoints_weights(tmp_path):
    data = write_shanghaitech(tmp_path / "data", {"train": 4, "val": 2, "test": 2}, seed=4)
    train(TrainConfig("tiny_density", data=str(data), out=str(tmp_path / "a"), amp="off", recipe={"epochs": 2}))
    start = Checkpoint.load(tmp_path / "a" / "last.pt").weights
    frozen = {"epochs": 1, "lr": 0.0, "backbone_lr": 0.0}  # no update: the run ends with the weights it began with
    for init, out in ((str(tmp_path / "a" / "last.pt"), "b"), (None, "c")):
        train(TrainConfig("tiny_density", data=str(data), out=str(tmp_path / out), amp="off", seed=7,
                          init_from=init, recipe=frozen))
    tuned, fresh = (Checkpoint.load(tmp_path / out / "last.pt").weights for out in ("b", "c"))
    assert all(torch.equal(start[k], tuned[k]) for k in start)
    assert not all(torch.equal(start[k], fresh[k]) for k in start)


def fake_row(protocol: str, model: str, n: int, draw: int, mae: float, **extra) -> dict:
    return {"protocol": protocol, "model": model, "budget": "tiny", "device": "cpu", "n_train": n, "draw": draw,
            "family": "density", "epochs": 3, "images_seen": 96, "crop_size": 128, "crops_per_image": 1,
            "train_seconds": 1.0, "mae": mae, "mse": mae + 1, "nae": 0.1, "f1_4": 0.5, "f1_8": 0.6,
            "checkpoint": "runs/x/best.pt", "date": "2026-01-01T00:00:00+00:00", "git_commit": "abc1234", **extra}


def table_after(markdown: str, heading: str) -> list[list[str]]:
    """The body cells of the first table under `heading`, checking every line has the header's width."""
    lines = markdown.split(f"### {heading}", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    table = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:end]]
    assert len({len(row) for row in table}) == 1
    return table[2:]


def test_report_shows_mean_and_spread_beside_the_anchors_and_lists_missing_rows(tmp_path):
    results = tmp_path / "results"
    budget = Budget(name="tiny", models=("tiny_density", "other"), cells_sizes=(32, 64), cells_draws=2,
                    crops_per_image=1, cells_crops=64, synthetic_crops=64, street_crops=64, street_crop_size=256,
                    validations=1, cells_models={32: ("tiny_density",)})
    for draw, mae in ((0, 3.0), (1, 5.5)):
        rows.append_row(rows.csv_path(results, "cells"),
                        fake_row("cells", "tiny_density", 64, draw, mae, test_views=8, mae_views=mae - 1), "cells")
    speed = {"bench_status": "ok", "bench_resolution": "768x1024", "bench_dtype": "bf16", "params_total": 2e6,
             "gflops_per_image": 10.0, "latency_ms_median": 50.0, "images_per_s": 20.0, "train_images_per_s": 9.0,
             "peak_rss_mb": 300.0}
    rows.append_row(rows.csv_path(results, "synthetic"), fake_row("synthetic", "tiny_density", 80, 0, 7.0, **speed),
                    "synthetic")
    markdown = report.write_report(results, {"tiny": budget}).read_text()

    cells = table_after(markdown, "1. VGG cells")
    ours = next(r for r in cells if r[0] == "tiny_density" and r[2] == "64")
    assert ours[3] == "2/2" and ours[4] == f"{np.mean([3.0, 5.5]):.2f} ± {np.std([3.0, 5.5], ddof=1):.2f}"
    assert ours[5] == f"{np.mean([2.0, 4.5]):.2f} ± {np.std([2.0, 4.5], ddof=1):.2f}"  # MAE, 8 views
    assert "N = 64, mean count of 8 views: best is tiny_density at 3.25 MAE" in markdown
    count_ception = next(r for r in cells if r[0].startswith("*Count-ception") and r[2] == "64")
    assert (count_ception[2], count_ception[4]) == ("64", "2.3")
    anchors_32 = [r for r in cells if r[2] == "32" and "published" in r[0]]
    assert [r[4] for r in anchors_32] == ["3.5 ± 0.2", "2.4 ± 0.4"]
    assert "shuffled" in count_ception[0] and "tests on images 101-200" in markdown
    assert next(r for r in cells if r[0] == "other" and r[2] == "64")[4] == report.NOT_RUN
    synthetic = table_after(markdown, "2. Synthetic crowds")
    assert synthetic[0][:3] == ["tiny_density", "density", "7.00"] and synthetic[0][12] == "20.00"
    assert "N = 64: best is tiny_density at 4.25 MAE" in markdown
    assert "Count-ception (Cohen et al. 2017) 2.3: not reached" in markdown
    assert "cells tiny_density N=32 draw 0" in markdown and "street other" in markdown
    assert "cells other N=64 draw 0" in markdown and "cells other N=32" not in markdown  # N = 32 trains one model
    assert "cells N = 32, 64 (N = 32: tiny_density only) with 2 draws each" in markdown
    assert not any(r[0] == "other" and r[2] == "32" for r in cells)
    assert (results / "comparison.png").stat().st_size > 0 and "comparison.png" in markdown


def test_a_csv_of_another_schema_is_refused_not_appended_to(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ZooError, match="cells.csv: its header"):
        rows.append_row(path, fake_row("cells", "m", 32, 0, 1.0), "cells")
    assert path.read_text() == "a,b\n1,2\n"
    rows.append_row(tmp_path / "new.csv", fake_row("cells", "m", 32, 0, 1.0), "cells")
    with open(tmp_path / "new.csv", newline="") as f:
        assert next(csv.reader(f)) == rows.COLUMNS


def test_the_command_regenerates_the_report_and_rejects_unknown_protocols(tmp_path, capsys, monkeypatch):
    from benchmarks import compare

    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "no-data"))  # no datasets: the report quotes no baselines
    rows.append_row(rows.csv_path(tmp_path, "cells"), fake_row("cells", "tiny_density", 32, 0, 4.0), "cells")
    absent = ["--cells", str(tmp_path / "no-cells"), "--street", str(tmp_path / "no-street")]
    assert compare.main(["--report-only", "--results", str(tmp_path), *absent]) == 0
    assert "| tiny_density | density | 32 | 1 | 4.00 |" in (tmp_path / "COMPARISON.md").read_text()
    assert compare.main(["--protocols", "cells,crowds", "--results", str(tmp_path), *absent]) == 2
    assert "--protocols crowds: unknown" in capsys.readouterr().out


def test_count_baselines_match_a_direct_computation(tmp_path):
    data = write_shanghaitech(tmp_path / "d", {"train": 5, "val": 2, "test": 3}, seed=5)
    pool = [len(r.points) for split in ("train", "val") for r in read_records(data, split)]
    test = [len(r.points) for r in read_records(data, "test")]
    expected_constant = sum(abs(t - sum(pool) / len(pool)) for t in test) / len(test)
    baseline = report.count_baseline(str(data))
    assert baseline.constant_mae == pytest.approx(expected_constant) and baseline.zero_mae == pytest.approx(
        sum(test) / len(test))
    markdown = report.render(report.load(tmp_path), baselines={"street": baseline})
    assert markdown.count("Reference without a model") == 0  # no rows: no tables to annotate
    rows.append_row(rows.csv_path(tmp_path, "street"), fake_row("street", "m", 4, 0, 1.0), "street")
    assert f"test MAE {expected_constant:.2f}" in report.render(report.load(tmp_path), baselines={"street": baseline})


def test_the_committed_comparison_csvs_have_the_schema_the_suite_writes():
    # docs/results.md documents these headers column by column (generated by benchmarks/documents.py)
    results = Path(__file__).resolve().parents[2] / "results"
    for protocol in rows.FILES:
        assert list(pd.read_csv(rows.csv_path(results, protocol), nrows=0).columns) == rows.columns(protocol)


def test_a_cells_only_budget_runs_and_reports_cells_alone(setup):
    cells_only = Budget(name="tiny-cells", models=("tiny_density",), cells_sizes=(4,), cells_draws=1,
                        crops_per_image=1, cells_crops=8, synthetic_crops=0, street_crops=0, street_crop_size=24,
                        validations=1)
    assert cells_only.protocols == ("cells",)
    for protocol in cells_only.protocols:
        protocols.PROTOCOLS[protocol](cells_only, setup)
    markdown = report.write_report(setup.results, {"tiny-cells": cells_only}).read_text()
    assert "### 1. VGG cells" in markdown and "### 2. Synthetic" not in markdown and "### 3. Real" not in markdown
    assert "None: every run this budget calls for is in the CSVs." in markdown
    assert "training crops per run: cells 8;" in markdown


def test_every_budget_is_listed_and_names_registered_models_and_recipe_fields_they_have():
    for key, budget in BUDGETS.items():
        assert budget.name == key or key == "cpu"  # "cpu" writes its rows as "cpu-reduced"
        assert f"--budget {key} " in report.COMMANDS, key  # the command list that --help and the report show
        assert set(budget.model_recipes) | set(budget.model_kwargs) <= set(budget.models), key
        for model in budget.models:
            get_recipe(model).override(**budget.model_recipes.get(model, {}))  # ZooError on an unknown field


def test_a_commit_of_digits_only_stays_text_in_the_report(tmp_path):
    rows.append_row(rows.csv_path(tmp_path, "cells"), fake_row("cells", "m", 32, 0, 1.0, git_commit="9098932"),
                    "cells")
    assert "Code: 9098932;" in report.render(report.load(tmp_path))
