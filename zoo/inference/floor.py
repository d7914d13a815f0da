"""The count floor: a frame whose count falls below it is reported as holding no one.

A counter that sums a map, or keeps every point above a score, rarely says exactly 0: the small mass or the few
points it leaves on an empty scene add up to a count a user cannot trust. The floor acts on the decoded frame
(after tiling and test-time views, before zones), the same way for every family, so each family's count of
nobody can be made 0 without touching its counts of crowds. It is chosen on validation images with and without
people (`choose_floor`), stored in the checkpoint, and 0 (no floor) unless a calibration chose one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from zoo.core.types import Prediction

EMPTY_GOAL = 0.5  # people: the mean count on empty scenes a floor must bring the model under
FLOOR_STEP = 0.25  # people: the candidates are the multiples of this up to the largest empty count seen


def below_floor(counts, floor: float) -> np.ndarray:
    """The rule, once: where a count (or an array of them) is reported as nobody. A floor of 0 is none."""
    return np.asarray((floor > 0) & (np.asarray(counts, np.float64) < floor))


def apply_floor(prediction: Prediction, floor: float) -> Prediction:
    """`prediction` unchanged when its count reaches `floor`, else a prediction of nobody: count 0, no points,
    and a zero map (so overlays and zone counts agree with the count)."""
    if not below_floor(prediction.count, floor):
        return prediction
    dense = None if prediction.dense_map is None else np.zeros_like(prediction.dense_map)
    return replace(prediction, count=0.0, points=prediction.points[:0], scores=prediction.scores[:0],
                   dense_map=dense)


def floored(counts: np.ndarray, floor: float) -> np.ndarray:
    """`counts` with every count below the floor made 0."""
    counts = np.asarray(counts, np.float64)
    return np.where(below_floor(counts, floor), 0.0, counts)


@dataclass(frozen=True)
class FloorChoice:
    """A floor and the validation numbers that chose it."""

    floor: float
    reached: bool  # whether the floor met both conditions (else `floor` is 0: no floor was good enough)
    empty_mean_before: float
    empty_mean_after: float
    mae_before: float
    mae_after: float
    mae_spread: float  # the validation MAE's standard error: std of the absolute errors / sqrt(images)


def mae_spread(errors: np.ndarray) -> float:
    errors = np.abs(np.asarray(errors, np.float64))
    return float(errors.std(ddof=1) / np.sqrt(len(errors))) if len(errors) > 1 else 0.0


def choose_floor(counts: np.ndarray, truth: np.ndarray, empty_counts: np.ndarray, *, goal: float = EMPTY_GOAL,
                 step: float = FLOOR_STEP) -> FloorChoice:
    """The smallest multiple of `step` that brings the mean count of the validation `empty_counts` under `goal`
    while the validation MAE (`counts` against `truth`) stays within one standard error of its value without a
    floor. None such: floor 0, `reached` False (a missed goal is reported, not forced)."""
    counts, truth = np.asarray(counts, np.float64), np.asarray(truth, np.float64)
    empty_counts = np.asarray(empty_counts, np.float64)
    errors = np.abs(counts - truth)
    before, spread = float(errors.mean()), mae_spread(errors)
    empty_before = float(empty_counts.mean()) if len(empty_counts) else 0.0
    top = float(empty_counts.max()) if len(empty_counts) else 0.0
    for floor in np.arange(0.0, top + 2 * step, step):
        empty_after = float(floored(empty_counts, floor).mean()) if len(empty_counts) else 0.0
        if empty_after >= goal:
            continue
        after = float(np.abs(floored(counts, floor) - truth).mean())
        if after <= before + spread:
            return FloorChoice(float(floor), True, empty_before, empty_after, before, after, spread)
    return FloorChoice(0.0, False, empty_before, empty_before, before, before, spread)
