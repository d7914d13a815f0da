"""The count floor: what it does to one prediction, how validation chooses it, and that every path `zoo predict`
and `zoo eval` take applies the floor a checkpoint holds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from zoo.cli import main
from zoo.core.types import Prediction
from zoo.data.synthetic import generate
from zoo.inference.floor import apply_floor, choose_floor, mae_spread
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train


def _prediction(count: float) -> Prediction:
    return Prediction(count=count, points=np.array([[3.0, 4.0], [5.0, 6.0]]), scores=np.array([0.9, 0.8]),
                      dense_map=np.full((2, 2), count / 4, np.float32), map_stride=8, map_is_density=True)


def test_a_count_under_the_floor_becomes_nobody_and_its_points_and_map_agree():
    empty = apply_floor(_prediction(1.5), 2.0)
    assert empty.count == 0 and empty.points.shape == (0, 2) and empty.scores.shape == (0,)
    assert empty.dense_map.shape == (2, 2) and not empty.dense_map.any()
    assert empty.map_stride == 8 and empty.map_is_density


@pytest.mark.parametrize(("count", "floor"), [(2.0, 2.0), (3.0, 2.0), (0.3, 0.0)])
def test_a_count_at_or_above_the_floor_or_no_floor_is_left_alone(count, floor):
    prediction = _prediction(count)
    assert apply_floor(prediction, floor) is prediction


def test_validation_chooses_the_smallest_floor_that_empties_the_empty_scenes():
    counts, truth = np.array([40.0, 52.0, 61.0, 35.0]), np.array([42.0, 50.0, 60.0, 37.0])
    empties = np.array([0.2, 1.1, 0.4, 1.3, 0.1, 0.0])  # mean 0.52: one step of 0.25 is not enough
    choice = choose_floor(counts, truth, empties)
    assert choice.reached and choice.floor == 0.25
    assert choice.empty_mean_before == pytest.approx(empties.mean())
    assert choice.empty_mean_after == pytest.approx((1.1 + 0.4 + 1.3) / 6) and choice.empty_mean_after < 0.5
    assert choice.mae_after == choice.mae_before == pytest.approx(1.75)
    assert choice.mae_spread == pytest.approx(np.std([2, 2, 1, 2], ddof=1) / 2)


def test_a_floor_that_would_erase_a_small_crowd_beyond_the_mae_spread_is_refused():
    counts, truth = np.array([3.0, 40.0, 3.1, 2.9]), np.array([3.0, 40.0, 3.0, 3.0])
    choice = choose_floor(counts, truth, np.array([4.0, 4.0]))  # only a floor above 4 empties them
    assert not choice.reached and choice.floor == 0.0
    assert choice.empty_mean_after == choice.empty_mean_before == 4.0
    assert choice.mae_after == choice.mae_before


def test_the_spread_of_one_image_is_zero():
    assert mae_spread(np.array([3.0])) == 0.0


@pytest.fixture(scope="module")
def floored_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("floor")
    data = generate(root / "data", seed=0, splits={"train": 4, "test": 2}, size=(64, 96))
    torch.manual_seed(0)
    result = train(TrainConfig(model="csrnet", data=str(data), out=str(root / "run"), device="cpu", amp="off",
                               recipe=dict(epochs=1, batch_size=2, crop_size=64)), console=Console(quiet=True))
    checkpoint = Checkpoint.load(result["checkpoint"])
    checkpoint.count_floor = 1e9  # more people than any image can hold: every frame is empty
    floored = root / "floored.pt"
    checkpoint.save(floored, for_inference=True)
    return {"root": root, "data": data, "plain": result["checkpoint"], "floored": floored}


def test_predict_and_eval_apply_the_checkpoints_floor(floored_run, tmp_path, capsys):
    images = floored_run["data"] / "test_data" / "images"
    counts = {}
    for name in ("plain", "floored"):
        out = tmp_path / name
        assert main(["predict", "--weights", str(floored_run[name]), str(images), "--out", str(out)]) == 0
        counts[name] = pd.read_csv(out / "summary.csv")["count"].to_numpy()
    assert (counts["plain"] != 0).all() and (counts["floored"] == 0).all()

    per_image = tmp_path / "per_image.csv"
    assert main(["eval", "--weights", str(floored_run["floored"]), "--json", "--per-image", str(per_image)]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scored = pd.read_csv(per_image)
    assert (scored["pred_count"] == 0).all() and (scored["gt_count"] > 0).all()
    assert reported["mae"] == pytest.approx(scored["gt_count"].mean())


def test_the_floor_is_stored_and_shown_by_zoo_info(floored_run, capsys):
    assert Checkpoint.load(floored_run["floored"]).count_floor == 1e9
    assert Checkpoint.load(floored_run["plain"]).count_floor == 0.0
    assert main(["info", str(floored_run["floored"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["count_floor"] == 1e9
