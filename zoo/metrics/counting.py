"""The evaluator shared by every model family: counting, GAME and localization metrics.

Per image, `pred` is `Prediction.count` and `gt` the number of true points. Over a dataset of n images:

- MAE = mean |pred - gt|.
- MSE = sqrt(mean (pred - gt)^2). This is a ROOT mean squared error; the crowd-counting literature calls it
  "MSE", and the name is kept so numbers compare with published tables.
- NAE = mean |pred - gt| / gt over the images with gt > 0 only (the others have no relative error);
  NaN when no image has gt > 0.
- GAME(L) = mean over images of sum over the 4^L cells of |pred_cell - gt_cell|, for L = 0..3 (see
  `region_counts` for the grid). Density models (`map_is_density`) are counted from their map, so their
  GAME(0) equals MAE; the others are counted from their points, so their GAME(0) is |M - N|.
- Localization at each pixel threshold t (default 4 and 8): a prediction is a true positive when the maximum
  one-to-one matching of predicted to true points, using only pairs at distance <= t, pairs it
  (`match_points`). Micro-averaged over the dataset: precision = sum TP / sum predictions,
  recall = sum TP / sum truths, F1 = 2PR / (P + R). Conventions for empty sets: precision = 1 when there
  are no predictions at all (nothing was claimed wrongly), recall = 1 when there are no truths at all
  (nothing was missed), F1 = 0 when P + R = 0. So both empty gives P = R = F1 = 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.types import Prediction

DEFAULT_THRESHOLDS = (4, 8)
GAME_LEVELS = (0, 1, 2, 3)


def _as_points(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (x, y), got shape {points.shape}")
    return points


def match_points(pred: np.ndarray, gt: np.ndarray, threshold: float) -> int:
    """Number of true positives: the size of a maximum one-to-one matching of predicted to true points
    using only pairs at Euclidean distance <= `threshold`.

    The assignment maximizes the number of feasible pairs (a 0/1 profit), not the total distance: a
    min-distance assignment can trade two matches for one. Only pairs within the threshold are built (KD-tree)
    and each connected group of them is solved on its own, so dense crowds and floods of predictions stay
    cheap instead of needing a full M x N matrix.
    """
    pred, gt = _as_points(pred), _as_points(gt)
    if len(pred) == 0 or len(gt) == 0:
        return 0
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(gt), threshold, output_type="ndarray")
    if len(pairs) == 0:
        return 0
    rows, cols = pairs["i"], pairs["j"]
    # Bipartite graph on pred nodes 0..M-1 and truth nodes M..M+N-1; components never share a match.
    graph = coo_matrix((np.ones(len(rows)), (rows, cols + len(pred))), shape=(len(pred) + len(gt),) * 2)
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels[rows], kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(labels[rows][order])) + 1)
    matches = 0
    for group in groups:
        row_ids, r = np.unique(rows[group], return_inverse=True)
        col_ids, c = np.unique(cols[group], return_inverse=True)
        feasible = np.zeros((len(row_ids), len(col_ids)))
        feasible[r, c] = 1.0
        picked = linear_sum_assignment(feasible, maximize=True)
        matches += int(feasible[picked].sum())
    return matches


def _cell_index(coords: np.ndarray, length: int, cells: int) -> np.ndarray:
    """GAME cell of each coordinate along one axis. Edges are `k * length // cells`; cells are half-open
    [edge_k, edge_k+1), so a coordinate exactly on an inner edge belongs to the later cell (right or below).
    Coordinates outside [0, length) are clipped into the first or last cell so every count lands somewhere."""
    edges = np.arange(cells + 1) * length // cells
    return np.clip(np.searchsorted(edges, coords, side="right") - 1, 0, cells - 1)


def region_counts(
    prediction_or_points: Prediction | np.ndarray, size: tuple[int, int], level: int
) -> np.ndarray:
    """(2^L, 2^L) counts of one image over the GAME grid of an (h, w) image at level L (rows top to bottom).

    Points count 1 each in the cell holding their (x, y). A `Prediction` with `map_is_density` is counted from
    its map instead: map cell (i, j) at stride s covers pixels [i*s, (i+1)*s) x [j*s, (j+1)*s), and goes whole
    to the GAME cell holding its centre ((j + 0.5) s, (i + 0.5) s); a grid edge inside a map cell does not
    split it. Map cells over padding (centres beyond h or w) are clipped into the border cells, so the cells
    always sum to the whole map.
    """
    h, w = size
    cells = 2**level
    counts = np.zeros((cells, cells))
    if isinstance(prediction_or_points, Prediction) and prediction_or_points.map_is_density:
        density = prediction_or_points.dense_map
        if density is None:
            raise ValueError("Prediction.map_is_density is set but dense_map is None")
        density = np.asarray(density, dtype=np.float64).reshape(density.shape[-2:])
        stride = prediction_or_points.map_stride
        row_cell = _cell_index((np.arange(density.shape[0]) + 0.5) * stride, h, cells)
        col_cell = _cell_index((np.arange(density.shape[1]) + 0.5) * stride, w, cells)
        np.add.at(counts, (row_cell[:, None], col_cell[None, :]), density)
        return counts
    points = prediction_or_points
    if isinstance(points, Prediction):
        points = points.points
    points = _as_points(points)
    np.add.at(counts, (_cell_index(points[:, 1], h, cells), _cell_index(points[:, 0], w, cells)), 1.0)
    return counts


def _ratio(numerator: float, denominator: float) -> float:
    """A precision or recall; 1 when nothing was to be counted (no predictions, or no truths)."""
    return numerator / denominator if denominator > 0 else 1.0


class Evaluator:
    """Accumulates images with `add`, then reports `summary()` and per-image `rows()` / `write_csv`."""

    def __init__(self, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS):
        self.thresholds = tuple(thresholds)
        self._rows: list[dict] = []
        #: the per-image row's keys, in CSV order
        self.columns = ["name", "gt_count", "pred_count", "abs_error", "n_pred"]
        self.columns += [f"game{level}" for level in GAME_LEVELS]
        self.columns += [f"tp_{self._suffix(t)}" for t in thresholds]

    @staticmethod
    def _suffix(threshold: float) -> str:
        return f"{threshold:g}"  # 4 -> "4", 4.5 -> "4.5"

    def add(
        self, prediction: Prediction, gt_points: np.ndarray, size: tuple[int, int], name: str = "",
        meta: dict | None = None,
    ) -> None:
        """Score one image of (h, w) `size`. An empty `name` becomes the image's index. (`meta` is for the
        pose evaluator, which shares this interface.)"""
        gt_points = _as_points(gt_points)
        pred_count = float(prediction.count)
        row = {
            "name": name or str(len(self._rows)),
            "gt_count": len(gt_points),
            "pred_count": pred_count,
            "abs_error": abs(pred_count - len(gt_points)),
            "n_pred": len(_as_points(prediction.points)),
        }
        for level in GAME_LEVELS:
            cell_errors = region_counts(prediction, size, level) - region_counts(gt_points, size, level)
            row[f"game{level}"] = float(np.abs(cell_errors).sum())
        for t in self.thresholds:
            row[f"tp_{self._suffix(t)}"] = match_points(prediction.points, gt_points, t)
        self._rows.append(row)

    def rows(self) -> list[dict]:
        return [dict(row) for row in self._rows]

    def summary(self) -> dict:
        if not self._rows:
            raise ZooError("evaluator: no images were added, so there is nothing to summarize")
        table = pd.DataFrame(self._rows)
        with_people = table[table["gt_count"] > 0]
        relative_errors = with_people["abs_error"] / with_people["gt_count"]
        result = {
            "images": len(table),
            "mae": float(table["abs_error"].mean()),
            "mse": float(np.sqrt((table["abs_error"] ** 2).mean())),
            "nae": float(relative_errors.mean()) if len(relative_errors) else float("nan"),
        }
        for level in GAME_LEVELS:
            result[f"game{level}"] = float(table[f"game{level}"].mean())
        for t in self.thresholds:
            key = self._suffix(t)
            tp = float(table[f"tp_{key}"].sum())
            precision = _ratio(tp, float(table["n_pred"].sum()))
            recall = _ratio(tp, float(table["gt_count"].sum()))
            both = precision + recall
            result[f"precision_{key}"] = precision
            result[f"recall_{key}"] = recall
            result[f"f1_{key}"] = 2 * precision * recall / both if both > 0 else 0.0
        return result

    def count_scale(self) -> float:
        """The factor that makes the predicted counts add up to the true ones (1 when nothing was predicted)."""
        table = pd.DataFrame(self._rows)
        predicted = float(table["pred_count"].sum())
        return float(table["gt_count"].sum()) / predicted if predicted > 0 else 1.0

    def selection_loss(self) -> float:
        """Lower is better: what the trainer picks checkpoints on (MAE)."""
        return self.summary()["mae"]

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write the per-image rows to `path` atomically. (Read names back with
        `pd.read_csv(path, dtype={"name": str})` so "001" stays a string.)"""
        try:
            table = pd.DataFrame(self._rows, columns=self.columns)
            atomic_write(Path(path), lambda tmp: table.to_csv(tmp, index=False))
        except OSError as error:
            raise ZooError(f"{path}: cannot write the per-image CSV ({error.strerror or error})") from None
