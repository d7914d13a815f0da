"""Metric names against what the evaluators report: every key the counting and pose evaluators summarize is
named, each with the direction its definition implies, and `better`/`worst`/`label` behave as a trainer and a
table use them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.core.types import Prediction
from zoo.metrics import names as N
from zoo.metrics.counting import Evaluator


def counting_summary() -> dict:
    evaluator = Evaluator()
    gt = np.array([[3.0, 4.0], [20.0, 20.0]])
    evaluator.add(Prediction(count=3.0, points=np.array([[3.0, 5.0], [9.0, 9.0], [30.0, 1.0]]),
                             scores=np.ones(3)), gt, (32, 32))
    return evaluator.summary()


def test_every_counting_summary_key_is_named_and_every_counting_name_is_reported():
    reported = set(counting_summary()) - {"images"}
    counting_names = set(N.METRICS) - set(N.POSE_METRICS)
    assert reported == counting_names
    assert set(N.HEADLINE_METRICS) <= reported and set(N.VIEW_METRICS) <= reported


def test_pose_summary_keys_are_the_named_pose_metrics():
    from zoo.metrics import pose

    assert tuple(pose.SUMMARY_KEYS) == N.POSE_METRICS and set(N.POSE_METRICS) <= set(N.METRICS)


@pytest.mark.parametrize("key", ["mae", "mse", "nae", "game0", "game1", "game2", "game3"])
def test_errors_are_lower_is_better(key):
    metric = N.METRICS[key]
    assert metric.lower_is_better and metric.direction == "lower" and metric.worst == math.inf
    assert metric.better(1.0, 2.0) and not metric.better(2.0, 1.0) and not metric.better(1.0, 1.0)


@pytest.mark.parametrize("key", ["precision_4", "recall_4", "f1_4", "precision_8", "recall_8", "f1_8",
                                 "ap", "ap50", "ap75", "ar"])
def test_scores_are_higher_is_better(key):
    metric = N.METRICS[key]
    assert not metric.lower_is_better and metric.direction == "higher" and metric.worst == -math.inf
    assert metric.better(2.0, 1.0) and not metric.better(1.0, 2.0) and not metric.better(1.0, 1.0)


def test_any_finite_value_beats_the_worst_and_the_worst_beats_nothing():
    for metric in N.METRICS.values():
        for value in (-1e300, 0.0, 1e300):
            assert metric.better(value, metric.worst) and not metric.better(metric.worst, value)


def test_each_metric_has_its_own_heading_and_a_views_heading_that_names_it():
    labels = [N.label(key) for key in N.METRICS]
    assert len(set(labels)) == len(labels)
    for key in N.VIEW_METRICS:
        views = N.label(f"{key}_views")
        assert views != N.label(key) and views.startswith(N.label(key))
    assert N.label("test_views") != N.label("test")  # an unnamed key keeps its views mark too


def test_the_mse_heading_says_it_is_a_root_mean_squared_error():
    # The literature's "MSE" is a root mean squared error (zoo/metrics/counting.py): the table must not hide it.
    assert "root mean squared" in N.label("mse").lower()
    assert N.label("mse_views").lower().startswith(N.label("mse").lower())


def test_view_keys_are_the_view_count_and_one_views_key_per_view_metric():
    assert N.VIEW_KEYS[0] == "test_views"
    assert list(N.VIEW_KEYS[1:]) == [f"{key}_views" for key in N.VIEW_METRICS]
