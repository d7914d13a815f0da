"""nAP (zoo.metrics.localization) against hand computations and a brute-force reimplementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.metrics.localization import DELTAS, NAP_KEYS, knn_scale, match_candidates, nap


def brute_scale(truth: np.ndarray, k: int = 3) -> np.ndarray:
    out = []
    for a in truth:
        distances = sorted(math.dist(a, b) for b in truth)[1:]  # drop the point itself
        out.append(np.mean(distances[:k]) if distances else math.inf)
    return np.array(out)


def brute_nap(images, delta: float, k: int = 3) -> float:
    """Every candidate in turn (score order, ties by image then position), against every free true point."""
    ranked, n_truth = [], 0
    for image, (candidates, scores, truth) in enumerate(images):
        scale = brute_scale(truth, k)
        taken = set()
        order = sorted(range(len(candidates)), key=lambda m: -scores[m])
        hit = {}
        for m in order:
            options = [(math.dist(candidates[m], truth[g]) / scale[g], g) for g in range(len(truth))
                       if g not in taken and math.dist(candidates[m], truth[g]) / scale[g] < delta]
            hit[m] = bool(options)
            if options:
                taken.add(min(options)[1])
        ranked += [(-scores[m], image, m, hit[m]) for m in range(len(candidates))]
        n_truth += len(truth)
    ranked.sort()
    area, tp, best_after = 0.0, 0, []
    precision, recall = [], []
    for n, (*_, hit) in enumerate(ranked, 1):
        tp += hit
        precision.append(tp / n)
        recall.append(tp / n_truth)
    for n in range(len(ranked)):
        best_after.append(max(precision[n:]))
    previous = 0.0
    for r, p in zip(recall, best_after, strict=True):
        area += (r - previous) * p
        previous = r
    return area


def test_knn_scale_is_the_mean_distance_to_the_three_nearest_other_points():
    truth = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [10.0, 0.0], [0.0, 20.0]])
    # From (0, 0): 3, 4, 10 -> 17/3. From (3, 0): 3, 5, 7 -> 5.
    np.testing.assert_allclose(knn_scale(truth)[:2], [17 / 3, 5.0])
    np.testing.assert_allclose(knn_scale(truth), brute_scale(truth))
    np.testing.assert_allclose(knn_scale(np.array([[0.0, 0.0], [6.0, 8.0]])), [10.0, 10.0])  # one other point
    assert np.isinf(knn_scale(np.array([[5.0, 5.0]]))).all()


def test_a_hand_example_matches_by_score_then_by_normalised_distance():
    # Two true points 10 px apart (each one's scale 10). Candidate A (score 0.9) sits 1 px from g0; B (0.8) sits
    # 1 px from g0 too, but g0 is taken and g1 is 11 px off (ratio 1.1), so B misses at delta 0.5; C (0.1), 2 px
    # from g1, hits.
    truth = np.array([[0.0, 0.0], [10.0, 0.0]])
    candidates = np.array([[1.0, 0.0], [-1.0, 0.0], [8.0, 0.0]])
    scores = np.array([0.9, 0.8, 0.1])
    assert match_candidates(candidates, scores, truth, 0.5).tolist() == [True, False, True]
    # Ranked A (hit), B (miss), C (hit): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3.
    result = nap([(candidates, scores, truth)], deltas=(0.5,))
    assert result["nap_0.5"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # At delta 0.05 (0.5 px) nothing is near enough: AP 0.
    assert nap([(candidates, scores, truth)], deltas=(0.05,))["nap_0.05"] == 0.0


def test_nap_equals_a_brute_force_computation_on_random_images():
    rng = np.random.default_rng(3)
    images = []
    for _ in range(6):
        truth = rng.uniform(0, 64, (int(rng.integers(2, 15)), 2))
        near = truth + rng.normal(0, 2.0, truth.shape)
        candidates = np.concatenate([near[rng.random(len(near)) < 0.8], rng.uniform(0, 64, (5, 2))])
        scores = rng.random(len(candidates)).round(1)  # ties on purpose
        images.append((candidates, scores, truth))
    images.append((np.zeros((0, 2)), np.zeros(0), rng.uniform(0, 64, (4, 2))))  # an image with no candidates
    result = nap(images)
    assert set(result) == set(NAP_KEYS)
    for delta in DELTAS:
        assert result[f"nap_{delta:g}"] == pytest.approx(brute_nap(images, delta), abs=1e-12), delta
    assert result["nap_0.05"] <= result["nap_0.25"] <= result["nap_0.5"]


def test_perfect_points_score_one_and_no_truth_is_nan():
    truth = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    assert nap([(truth.copy(), np.ones(4), truth)]) == {key: 1.0 for key in NAP_KEYS}
    assert all(math.isnan(v) for v in nap([(truth, np.ones(4), np.zeros((0, 2)))]).values())
    assert nap([(np.zeros((0, 2)), np.zeros(0), truth)])["nap_0.5"] == 0.0
    # A lone true point has no scale: any candidate of its image is near enough.
    assert nap([(np.array([[50.0, 50.0]]), np.ones(1), np.array([[0.0, 0.0]]))])["nap_0.05"] == 1.0
