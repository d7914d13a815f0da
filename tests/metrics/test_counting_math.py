"""The evaluator's remaining definitions against hand-computed values: NAE over images with one person, the
count scale for fractional counts, the selection loss, unnamed images, the per-image CSV's values, and GAME
from density maps that are not square or carry a channel axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zoo.core.types import Prediction
from zoo.metrics.counting import Evaluator, region_counts


def counted(count: float, *xy) -> Prediction:
    pts = np.array(xy, dtype=float).reshape(-1, 2)
    return Prediction(count=count, points=pts, scores=np.ones(len(pts)))


def test_nae_counts_images_with_a_single_person():
    evaluator = Evaluator()
    evaluator.add(counted(3.0), np.array([[1.0, 1.0]]), (8, 8))  # |3 - 1| / 1
    evaluator.add(counted(3.0), np.ones((4, 2)), (8, 8))  # |3 - 4| / 4
    evaluator.add(counted(2.0), np.zeros((0, 2)), (8, 8))  # no people: left out
    assert evaluator.summary()["nae"] == pytest.approx((2 + 0.25) / 2)


def test_count_scale_with_less_than_one_head_predicted_in_all():
    evaluator = Evaluator()
    evaluator.add(counted(0.25), np.ones((1, 2)), (8, 8))
    evaluator.add(counted(0.5), np.ones((2, 2)), (8, 8))
    assert evaluator.count_scale() == pytest.approx(3 / 0.75)


def test_the_selection_loss_is_the_mae():
    evaluator = Evaluator()
    evaluator.add(counted(5.0), np.ones((2, 2)), (8, 8))
    evaluator.add(counted(1.0), np.ones((2, 2)), (8, 8))
    assert evaluator.selection_loss() == pytest.approx((3 + 1) / 2) == evaluator.summary()["mae"]


def test_unnamed_images_are_named_by_their_index():
    evaluator = Evaluator()
    for name in ("", "x", ""):
        evaluator.add(counted(0.0), np.zeros((0, 2)), (8, 8), name)
    evaluator.add(counted(0.0), np.zeros((0, 2)), (8, 8))  # no name given at all
    assert [row["name"] for row in evaluator.rows()] == ["0", "x", "2", "3"]


def test_the_csv_holds_every_rows_values_under_its_key(tmp_path):
    evaluator = Evaluator(thresholds=(4,))
    evaluator.add(counted(2.5, (1, 1), (6, 6)), np.array([[1.0, 2.0], [7.0, 7.0], [3.0, 3.0]]), (8, 8), "a")
    path = tmp_path / "rows.csv"
    evaluator.write_csv(path)
    table = pd.read_csv(path, dtype={"name": str})
    assert set(table.columns) == set(evaluator.rows()[0])
    row = table.iloc[0]
    assert (row["name"], row["gt_count"], row["pred_count"], row["abs_error"], row["n_pred"]) == ("a", 3, 2.5, 0.5, 2)
    assert row["tp_4"] == 2 and row["game0"] == 1  # point predictions: GAME counts their 2 points


def test_game_from_a_map_that_is_not_square():
    # An 8x12 image, stride-4 map of 2 rows x 3 columns. Level 1 edges: rows (0, 4, 8), columns (0, 6, 12);
    # map cell centres: rows 2, 6 -> cells 0, 1; columns 2, 6, 10 -> cells 0, 1, 1.
    density = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    prediction = Prediction(count=21.0, points=np.zeros((0, 2)), scores=np.zeros(0), dense_map=density,
                            map_stride=4, map_is_density=True)
    np.testing.assert_allclose(region_counts(prediction, (8, 12), 1), [[1, 5], [4, 11]])


def test_a_density_map_with_a_channel_axis_counts_like_the_plain_map():
    density = np.arange(12, dtype=float).reshape(3, 4)
    plain, with_channel = (Prediction(count=66.0, points=np.zeros((0, 2)), scores=np.zeros(0), dense_map=d,
                                      map_stride=2, map_is_density=True) for d in (density, density[None]))
    for level in (0, 1, 2):
        np.testing.assert_allclose(region_counts(with_channel, (6, 8), level), region_counts(plain, (6, 8), level))
    # Level 1 on 6x8: row edges (0, 3, 6), column edges (0, 4, 8); centres rows 1, 3, 5 and columns 1, 3, 5, 7.
    np.testing.assert_allclose(region_counts(plain, (6, 8), 1), [[0 + 1, 2 + 3], [4 + 5 + 8 + 9, 6 + 7 + 10 + 11]])
