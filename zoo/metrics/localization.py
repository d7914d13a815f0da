"""Localization as P2PNet's paper scores it: density-normalised average precision (nAP) at a few deltas.

- Scale of a true point g: d_kNN(g), the mean distance from g to its k (= 3) nearest other true points of the
  same image (fewer than k others: the mean over those there are; none: infinite, so any candidate of that
  image is near enough to a lone point).
- Matching, per image and delta: candidates in descending score order (ties: the order given) each take the
  unmatched true point with the smallest ratio distance / d_kNN(g), provided that ratio is below delta; a
  candidate left without one is a false positive. Each true point is matched at most once.
- nAP at delta: every candidate of every image ranked by score (ties: image order, then the order given),
  precision and recall after each, recall over all true points; the area under the precision-recall curve
  with all-point interpolation (precision at recall r taken as the best precision at any recall >= r). NaN
  when there are no true points at all; 0 when there are true points and no candidates.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial import cKDTree

DELTAS = (0.05, 0.25, 0.5)
NEIGHBOURS = 3


def nap_key(delta: float) -> str:
    """The result key of nAP at `delta`: "nap_0.05", "nap_0.25", "nap_0.5"."""
    return f"nap_{delta:g}"


NAP_KEYS = tuple(nap_key(d) for d in DELTAS)


def _points(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points.reshape(0, 2) if points.size == 0 else points


def knn_scale(truth, k: int = NEIGHBOURS) -> np.ndarray:
    """d_kNN of each true point: the mean distance to its k nearest other true points (see the module)."""
    truth = _points(truth)
    others = min(k, len(truth) - 1)
    if others <= 0:
        return np.full(len(truth), np.inf)
    distances, _ = cKDTree(truth).query(truth, k=others + 1)  # the first neighbour is the point itself
    return distances[:, 1:].mean(axis=1)


def match_candidates(candidates, scores, truth, delta: float, scale: np.ndarray | None = None) -> np.ndarray:
    """Whether each candidate (in the order given) is a true positive at `delta`, by the greedy matching above.
    `scale` is `knn_scale(truth)`, passed to reuse it across deltas."""
    candidates, truth = _points(candidates), _points(truth)
    if len(candidates) == 0 or len(truth) == 0:
        return np.zeros(len(candidates), dtype=bool)
    scale = knn_scale(truth) if scale is None else scale
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    # Only pairs within delta x the largest scale can match; a lone point (infinite scale) pairs with everyone.
    reach = delta * scale.max()
    if np.isfinite(reach):
        pairs = cKDTree(candidates).sparse_distance_matrix(cKDTree(truth), reach, output_type="ndarray")
        i, j, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    else:
        i, j = (a.ravel() for a in np.meshgrid(np.arange(len(candidates)), np.arange(len(truth)), indexing="ij"))
        d = np.linalg.norm(candidates[i] - truth[j], axis=1)
    ratio = d / scale[j]
    keep = ratio < delta
    i, j, ratio = i[keep], j[keep], ratio[keep]
    return _greedy(i, j, ratio, rank, len(candidates), len(truth))


def _greedy(i: np.ndarray, j: np.ndarray, ratio: np.ndarray, rank: np.ndarray, n_candidates: int,
            n_truth: int) -> np.ndarray:
    """Walk the feasible pairs by candidate rank, each candidate's true points nearest (by ratio) first: a
    candidate's match is the first of its pairs whose true point is still free."""
    hits = np.zeros(n_candidates, dtype=bool)
    taken = np.zeros(n_truth, dtype=bool)
    order = np.lexsort((ratio, rank[i]))
    for a, b in zip(i[order].tolist(), j[order].tolist(), strict=True):
        if not (hits[a] or taken[b]):
            hits[a] = taken[b] = True
    return hits


def average_precision(hits: np.ndarray, scores: np.ndarray, n_truth: int) -> float:
    """All-point interpolated area under the precision-recall curve of candidates ranked by `scores`."""
    if n_truth == 0:
        return float("nan")
    if len(hits) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.cumsum(np.asarray(hits, dtype=np.float64)[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / n_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * envelope).sum())


def nap(images: Iterable[tuple], deltas: tuple[float, ...] = DELTAS, k: int = NEIGHBOURS) -> dict[str, float]:
    """nAP at each delta over `images`, each a (candidates (M, 2), scores (M,), truth (N, 2)) triple."""
    hits = {delta: [] for delta in deltas}
    all_scores, n_truth = [], 0
    for candidates, scores, truth in images:
        truth = _points(truth)
        scale = knn_scale(truth, k)
        for delta in deltas:
            hits[delta].append(match_candidates(candidates, scores, truth, delta, scale))
        all_scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        n_truth += len(truth)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    return {nap_key(delta): average_precision(np.concatenate(hits[delta]) if hits[delta] else np.zeros(0, bool),
                                              scores, n_truth) for delta in deltas}
