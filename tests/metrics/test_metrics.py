"""The shared evaluator against hand-worked cases and independent references (brute force, Hopcroft-Karp)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.metrics.counting import Evaluator, match_points, region_counts


def points(*xy) -> np.ndarray:
    return np.array(xy, dtype=float).reshape(-1, 2)


def point_prediction(*xy) -> Prediction:
    pts = points(*xy)
    return Prediction(count=float(len(pts)), points=pts, scores=np.ones(len(pts)))


def density_prediction(density, stride: int = 1) -> Prediction:
    density = np.asarray(density, dtype=float)
    return Prediction(count=float(density.sum()), points=points(), scores=np.zeros(0), dense_map=density,
                      map_stride=stride, map_is_density=True)


# ---------------------------------------------------------------- matching


def test_distance_exactly_at_threshold_matches():
    assert match_points(points((3, 4)), points((0, 0)), 5) == 1  # 3-4-5 triangle: distance exactly 5
    assert match_points(points((3, 4)), points((0, 0)), 4.99) == 0


def test_maximizes_the_number_of_matches_not_the_total_distance():
    # p0 sits on g0 and is exactly 1 from g1; p1 is 1 from g0 and sqrt(2) from g1. By hand, with threshold 1,
    # p0-g1 and p1-g0 are both within reach: 2 matches. The min-total-distance assignment instead takes
    # p0-g0 + p1-g1 (0 + 1.414 < 1 + 1), whose second pair is out of reach: 1 match.
    pred, gt = points((0, 0), (0, 1)), points((0, 0), (1, 0))
    distance = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
    rows, cols = linear_sum_assignment(distance)
    assert (distance[rows, cols] <= 1).sum() == 1
    assert match_points(pred, gt, 1) == 2


@pytest.mark.parametrize(
    ("pred", "gt", "threshold", "expected"),
    [
        (points((5, 0)), points((0, 0), (10, 0)), 5, 1),  # one prediction equidistant from two truths
        (points((0, 0), (0, 0)), points((1, 0)), 2, 1),  # two identical predictions compete for one truth
        (points((0, 0), (0, 0)), points((1, 0), (1, 0)), 2, 2),  # duplicates on both sides
        (points((0, 0), (2, 0), (4, 0)), points((1, 0), (3, 0), (5, 0)), 1, 3),  # a chain of ties at 1
        (points((0, 0), (100, 100)), points((2, 0), (100, 103)), 2.5, 1),  # two groups, only one within reach
    ],
)
def test_hand_worked_matchings_with_ties(pred, gt, threshold, expected):
    assert match_points(pred, gt, threshold) == expected
    assert match_points(gt, pred, threshold) == expected  # matching is symmetric


@pytest.mark.parametrize(
    ("pred", "gt"),
    [(points(), points((1, 1))), (points((1, 1)), points()), (points(), points()), (np.zeros(0), points())],
)
def test_empty_sets_match_nothing(pred, gt):
    assert match_points(pred, gt, 8) == 0


def brute_force_matches(pred: np.ndarray, gt: np.ndarray, threshold: float) -> int:
    """Best count over every injective assignment of the smaller set into the larger one."""
    if len(pred) > len(gt):
        pred, gt = gt, pred
    within = np.hypot(*(pred[:, None] - gt[None]).transpose(2, 0, 1)) <= threshold
    return max((sum(within[i, j] for i, j in enumerate(chosen))
                for chosen in itertools.permutations(range(len(gt)), len(pred))), default=0)


def test_matches_brute_force_on_small_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        # Integer coordinates on a small grid make ties and exact-threshold distances common.
        pred = rng.integers(0, 12, (rng.integers(0, 6), 2)).astype(float)
        gt = rng.integers(0, 12, (rng.integers(0, 6), 2)).astype(float)
        threshold = float(rng.choice([1, 2, 2.5, 4, 5]))
        assert match_points(pred, gt, threshold) == brute_force_matches(pred, gt, threshold)


def test_matches_hopcroft_karp_on_a_dense_crowd():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 400, (1500, 2))
    pred = np.concatenate([gt[:1200] + rng.normal(0, 4, (1200, 2)), rng.uniform(0, 400, (800, 2))])
    within = np.linalg.norm(pred[:, None] - gt[None], axis=-1) <= 6
    reference = (maximum_bipartite_matching(csr_matrix(within), perm_type="column") >= 0).sum()
    assert match_points(pred, gt, 6) == reference


def test_rejects_points_that_are_not_xy_pairs():
    with pytest.raises(ValueError, match="shape"):
        match_points(np.zeros((3, 3)), points((0, 0)), 4)


# ---------------------------------------------------------------- GAME regions

# A 4x4 image. Cells are half-open, so x = 2.0 or y = 2.0 (an inner edge at level 1) goes right / down.
GT_4X4 = points((0.5, 0.5), (2.0, 1.0), (3.5, 3.5), (1.9, 3.0), (0.0, 2.0))
GT_LEVEL1 = [[1, 1], [2, 1]]
GT_LEVEL2 = [[1, 0, 0, 0],
             [0, 0, 1, 0],
             [1, 0, 0, 0],
             [0, 1, 0, 1]]
DENSITY_4X4 = [[1.0, 2.0, 0.0, 0.0],
               [0.0, 1.0, 0.0, 3.0],
               [0.5, 0.0, 0.0, 0.0],
               [0.0, 0.0, 0.5, 1.0]]


def test_region_counts_from_points_on_a_4x4_image():
    np.testing.assert_array_equal(region_counts(GT_4X4, (4, 4), 0), [[5]])
    np.testing.assert_array_equal(region_counts(GT_4X4, (4, 4), 1), GT_LEVEL1)
    np.testing.assert_array_equal(region_counts(GT_4X4, (4, 4), 2), GT_LEVEL2)
    assert region_counts(GT_4X4, (4, 4), 3).sum() == 5  # 8x8 cells on 4 pixels: some are empty, none lost


def test_region_counts_from_a_density_map_on_a_4x4_image():
    prediction = density_prediction(DENSITY_4X4)
    np.testing.assert_allclose(region_counts(prediction, (4, 4), 0), [[9.0]])
    np.testing.assert_allclose(region_counts(prediction, (4, 4), 1), [[4.0, 3.0], [0.5, 1.5]])
    np.testing.assert_allclose(region_counts(prediction, (4, 4), 2), DENSITY_4X4)


def test_density_cells_go_whole_to_the_cell_of_their_centre():
    # 6x6 image, stride-4 map of 2x2 cells covering 8x8 (the last row and column lie over padding).
    # Map cell centres are at 2 and 6. Level 1 edges (0, 3, 6): centre 2 -> cell 0, centre 6 -> clipped to 1.
    # Level 2 edges (0, 1, 3, 4, 6): centre 2 -> cell 1 although edge 1 and 3 cut the map cell; 6 -> cell 3.
    prediction = density_prediction([[1.0, 2.0], [3.0, 4.0]], stride=4)
    np.testing.assert_allclose(region_counts(prediction, (6, 6), 1), [[1, 2], [3, 4]])
    np.testing.assert_allclose(region_counts(prediction, (6, 6), 2), [[0, 0, 0, 0],
                                                                      [0, 1, 0, 2],
                                                                      [0, 0, 0, 0],
                                                                      [0, 3, 0, 4]])


def test_region_edges_use_integer_division_and_clip_outside_points():
    # (h, w) = (5, 7) at level 1: row edges (0, 2, 5), column edges (0, 3, 7).
    pts = points((3.0, 1.99), (2.99, 2.0), (7.0, 5.0), (-0.5, 0.0))
    np.testing.assert_array_equal(region_counts(pts, (5, 7), 1), [[1, 1], [1, 1]])
    np.testing.assert_array_equal(region_counts(points((3.0, 1.99)), (5, 7), 1), [[0, 1], [0, 0]])
    np.testing.assert_array_equal(region_counts(points((2.99, 2.0)), (5, 7), 1), [[0, 0], [1, 0]])


def test_point_predictions_count_their_points_even_with_a_heatmap():
    prediction = point_prediction((0.5, 0.5), (3.9, 0.1))
    prediction.dense_map = np.ones((4, 4))  # a heatmap, not a density: ignored by GAME
    np.testing.assert_array_equal(region_counts(prediction, (4, 4), 1), [[1, 1], [0, 0]])


def test_game_against_hand_computed_cell_errors():
    evaluator = Evaluator()
    evaluator.add(point_prediction((0.5, 0.5), (3.9, 0.1), (3.0, 3.0)), GT_4X4, (4, 4), "points")
    evaluator.add(density_prediction(DENSITY_4X4), GT_4X4, (4, 4), "density")
    by_points, by_density = evaluator.rows()
    # points level 1: [[1, 1], [0, 1]] vs [[1, 1], [2, 1]]; level 2: (0,3), (1,2), (2,0), (3,1) differ by 1
    assert (by_points["game0"], by_points["game1"], by_points["game2"]) == (2, 2, 4)
    # density level 1: |4-1| + |3-1| + |0.5-2| + |1.5-1|; level 2: 2 + 1 + 1 + 3 + 0.5 + 1 + 0.5
    assert by_density["game0"] == pytest.approx(4.0)
    assert by_density["game1"] == pytest.approx(7.0)
    assert by_density["game2"] == pytest.approx(9.0)
    assert by_density["game0"] == pytest.approx(by_density["abs_error"])  # GAME(0) == MAE for density models
    assert evaluator.summary()["game2"] == pytest.approx((4 + 9) / 2)


def test_density_without_a_map_is_refused():
    with pytest.raises(ValueError, match="dense_map"):
        region_counts(Prediction(3.0, points(), np.zeros(0), map_is_density=True), (4, 4), 1)


# ---------------------------------------------------------------- summary


def three_image_evaluator() -> Evaluator:
    evaluator = Evaluator()
    # (25, 10) is 5 from both (20, 10) and (30, 10): a tie out of reach at 4, within reach at 8.
    truths_a = points((10, 10), (20, 10), (30, 10), (40, 10))
    evaluator.add(point_prediction((13, 10), (25, 10)), truths_a, (64, 64), "a")
    evaluator.add(point_prediction((1, 1), (9, 9), (30, 30)), points(), (64, 64), "b")
    # (5, 9) is exactly 4 from (5, 5) but (5, 5) takes it; (50, 58) is exactly 8 from (50, 50).
    evaluator.add(point_prediction((5, 5), (5, 9), (50, 58)), points((5, 5), (50, 50)), (64, 64), "c")
    return evaluator


def test_summary_against_hand_computed_values():
    summary = three_image_evaluator().summary()
    # count errors: 2 - 4, 3 - 0, 3 - 2
    assert summary["images"] == 3
    assert summary["mae"] == pytest.approx(2.0)
    assert summary["mse"] == pytest.approx(math.sqrt((4 + 9 + 1) / 3))  # a root: not 14/3
    assert summary["nae"] == pytest.approx((2 / 4 + 1 / 2) / 2)  # image b (no people) is skipped
    assert summary["game0"] == pytest.approx(2.0)
    # threshold 4: TP 1 + 0 + 1 of 8 predictions and 6 truths; threshold 8: TP 2 + 0 + 2
    assert (summary["precision_4"], summary["recall_4"]) == pytest.approx((2 / 8, 2 / 6))
    assert summary["f1_4"] == pytest.approx(2 / 7)
    assert (summary["precision_8"], summary["recall_8"]) == pytest.approx((4 / 8, 4 / 6))
    assert summary["f1_8"] == pytest.approx(4 / 7)
    assert set(summary) == {"images", "mae", "mse", "nae", "game0", "game1", "game2", "game3", "precision_4",
                            "recall_4", "f1_4", "precision_8", "recall_8", "f1_8"}


@pytest.mark.parametrize(
    ("prediction", "gt", "expected"),
    [
        (point_prediction(), points(), (1.0, 1.0, 1.0)),  # nothing claimed, nothing missed
        (point_prediction(), points((3, 3)), (1.0, 0.0, 0.0)),  # no predictions: precision 1 by convention
        (point_prediction((3, 3)), points(), (0.0, 1.0, 0.0)),  # no truths: recall 1 by convention
        (point_prediction((3, 3)), points((30, 30)), (0.0, 0.0, 0.0)),  # P + R = 0: F1 is 0, not 0/0
    ],
)
def test_precision_recall_conventions_for_empty_sets(prediction, gt, expected):
    evaluator = Evaluator(thresholds=(4,))
    evaluator.add(prediction, gt, (32, 32))
    summary = evaluator.summary()
    assert (summary["precision_4"], summary["recall_4"], summary["f1_4"]) == expected


def test_nae_is_nan_without_people_and_thresholds_name_the_keys():
    evaluator = Evaluator(thresholds=(2, 4.5))
    evaluator.add(point_prediction((1, 1)), points(), (8, 8))
    summary = evaluator.summary()
    assert math.isnan(summary["nae"])
    assert {"f1_2", "f1_4.5", "recall_2", "precision_4.5"} <= set(summary)
    assert "f1_4" not in summary and evaluator.rows()[0]["tp_4.5"] == 0


def test_summary_of_nothing_is_a_user_error():
    with pytest.raises(ZooError, match="no images"):
        Evaluator().summary()


# ---------------------------------------------------------------- CSV


def test_csv_round_trips_through_pandas(tmp_path):
    evaluator = three_image_evaluator()
    evaluator.add(point_prediction((1, 1)), points((1, 2)), (8, 8), "007")
    path = tmp_path / "results" / "per_image.csv"
    evaluator.write_csv(path)
    table = pd.read_csv(path, dtype={"name": str})
    assert list(table.columns) == evaluator.columns
    expected = pd.DataFrame(evaluator.rows(), columns=evaluator.columns)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert table["name"].tolist() == ["a", "b", "c", "007"]
    hand_counts = [[2, 1, 2], [3, 0, 0], [3, 1, 2], [1, 1, 1]]
    assert table[["n_pred", "tp_4", "tp_8"]].to_numpy().tolist() == hand_counts
    assert sorted(p.name for p in path.parent.iterdir()) == ["per_image.csv"]  # no temporary file left


def test_csv_of_no_images_has_the_header(tmp_path):
    path = tmp_path / "empty.csv"
    Evaluator().write_csv(path)
    table = pd.read_csv(path)
    assert table.empty and list(table.columns) == Evaluator().columns


def test_csv_overwrites_and_unwritable_paths_are_user_errors(tmp_path):
    path = tmp_path / "per_image.csv"
    path.write_text("stale\n")
    three_image_evaluator().write_csv(path)
    assert len(pd.read_csv(path)) == 3
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ZooError, match="a_file"):
        three_image_evaluator().write_csv(blocker / "per_image.csv")


def test_count_scale_makes_the_predicted_counts_add_up_to_the_true_ones():
    evaluator = Evaluator()
    empty = np.zeros((0, 2))
    for predicted, true in ((4.0, 6), (1.0, 3), (0.0, 1)):
        evaluator.add(Prediction(predicted, empty, np.zeros(0)), np.ones((true, 2)), (8, 8))
    assert evaluator.count_scale() == pytest.approx(10 / 5)
    nothing = Evaluator()
    nothing.add(Prediction(0.0, empty, np.zeros(0)), np.ones((3, 2)), (8, 8))
    assert nothing.count_scale() == 1.0  # no level to scale
