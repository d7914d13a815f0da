"""Local maxima shared by the density and heatmap decoders: scipy's maximum filter as the reference, and one peak
per flat top (equal neighbours, as bf16 rounding makes them, would otherwise each count as a head)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import maximum_filter

from zoo.models.peaks import local_maxima


def reference_maxima(values: np.ndarray) -> np.ndarray:
    """Cells no smaller than any cell of their 3x3 window (scipy; outside the map counts as -inf)."""
    return values == maximum_filter(values, size=3, mode="constant", cval=-np.inf)


def test_without_ties_the_maxima_are_the_maximum_filters():
    values = np.random.default_rng(0).normal(size=(3, 2, 17, 23)).astype(np.float32)
    found = local_maxima(torch.from_numpy(values)).numpy()
    expected = np.stack([[reference_maxima(v) for v in image] for image in values])
    assert found.shape == values.shape and expected.sum() > 50
    assert (found == expected).all()


def test_a_flat_top_gives_one_peak_at_its_first_cell():
    for rows, cols in [(1, 2), (2, 1), (2, 2), (1, 3), (3, 3)]:
        values = np.zeros((9, 9), np.float32)
        values[3:3 + rows, 4:4 + cols] = 1.0
        found = np.argwhere(local_maxima(torch.from_numpy(values)).numpy() & (values > 0))  # above the floor
        assert found.tolist() == [[3, 4]], (rows, cols)


def test_a_tie_with_a_neighbour_that_is_no_maximum_keeps_the_peak():
    values = np.zeros((6, 6), np.float32)
    values[2, 2] = values[2, 3] = 1.0
    values[1, 1] = 2.0  # (2, 2) is no maximum: (2, 3) is the only peak of that top
    found = np.argwhere(local_maxima(torch.from_numpy(values)).numpy() & (values > 0)).tolist()
    assert found == [[1, 1], [2, 3]]


def test_rounded_maps_keep_every_peak_once():
    """Gaussian bumps whose tops bf16 rounds into equal neighbours: every bump found once, none twice."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:48, 0:72].astype(np.float32)
    # each bump's top nearly halfway between two cells: their values differ by less than bf16 resolves
    centres = [(x + rng.uniform(0.49, 0.51), y) for x in range(6, 70, 12) for y in range(6, 46, 12)]
    values = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 18.0) * (4 + rng.uniform()) for x, y in centres)
    rounded = torch.from_numpy(values.astype(np.float32)).bfloat16().float()
    ties = (rounded[:, 1:] == rounded[:, :-1]) & (rounded[:, 1:] > 3)
    assert ties.any()  # the rounding did make equal neighbours at some tops
    peaks = np.argwhere(local_maxima(rounded).numpy() & (rounded.numpy() > 3))
    assert len(peaks) == len(centres)
    distances = np.linalg.norm(peaks[:, None] - peaks[None], axis=2) + np.eye(len(peaks)) * 99
    assert distances.min() > 2
