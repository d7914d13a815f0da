"""Density maps near the borders against an independent reference: each head's Gaussian integrated per axis with
math.erf over every cell, that profile divided by its mass inside the valid region (as zoo/density.py
documents), the map their outer product. Sums alone cannot tell where the mass cut by a border went; these
tests compare every cell, for heads within one sigma of each edge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.core.errors import ZooError
from zoo.models import density as D


def erf_profile(centre: float, sigma: float, length: int, valid: int, cell: int) -> np.ndarray:
    """Mass of a 1-D normal in each cell [k*cell, (k+1)*cell) cut at `valid`, renormalized to 1 over [0, valid)."""
    def cdf(edge: float) -> float:
        return 0.5 * (1 + math.erf((edge - centre) / (sigma * math.sqrt(2))))

    masses = np.array([cdf(min((k + 1) * cell, valid)) - cdf(min(k * cell, valid))
                       for k in range(length // cell)])
    return masses / (cdf(valid) - cdf(0))


def reference_map(points, sigmas, size, cell=1, valid=None) -> np.ndarray:
    (h, w), (vh, vw) = size, valid or size
    total = np.zeros((h // cell, w // cell))
    for (x, y), sigma in zip(points, sigmas, strict=True):
        total += np.outer(erf_profile(y, sigma, h, vh, cell), erf_profile(x, sigma, w, vw, cell))
    return total


SIZE = (40, 56)  # (h, w)
SIGMA = 3.0
# One head within one sigma of each edge, and of each corner (x, y).
NEAR_EDGES = {
    "left": (0.6 * SIGMA, 20.3), "right": (56 - 0.4 * SIGMA, 17.9), "top": (27.2, 0.3 * SIGMA),
    "bottom": (31.7, 40 - 0.8 * SIGMA), "top-left": (1.0, 2.0), "bottom-right": (55.0, 39.5),
    "top-right": (54.2, 0.5), "bottom-left": (0.2, 38.1),
}


@pytest.mark.parametrize("cell", [1, 8])
@pytest.mark.parametrize("edge", list(NEAR_EDGES))
def test_a_head_near_an_edge_matches_the_renormalized_erf_integral(edge, cell):
    points, sigmas = np.array([NEAR_EDGES[edge]]), np.array([SIGMA])
    rendered = D.render_density(points, sigmas, SIZE, cell=cell)
    np.testing.assert_allclose(rendered, reference_map(points, sigmas, SIZE, cell), rtol=1e-9, atol=1e-12)
    assert abs(rendered.sum() - 1) < 1e-9


@pytest.mark.parametrize("cell", [1, 8])
def test_heads_near_the_valid_regions_edges_inside_a_padded_map(cell):
    valid = (35, 45)  # the map is padded to SIZE; the real content ends at row 35, column 45
    points = np.array([[44.0, 10.0], [2.0, 34.2], [43.5, 33.9], [20.0, 0.5], [0.4, 17.0]])
    sigmas = np.array([2.0, 2.5, 1.5, 3.5, 4.0])
    rendered = D.render_density(points, sigmas, SIZE, cell=cell, valid=valid)
    np.testing.assert_allclose(rendered, reference_map(points, sigmas, SIZE, cell, valid), rtol=1e-9, atol=1e-12)
    assert abs(rendered.sum() - len(points)) < 1e-9


def test_the_encoder_renders_near_border_heads_inside_valid_size():
    encoder = D.DensityEncoder(D.DensityParams(sigma_mode="fixed", sigma=SIGMA), stride=8)
    points = np.array(list(NEAR_EDGES.values()))
    target = encoder(points, SIZE, {"valid_size": SIZE})["density"][0].double().numpy()
    expected = reference_map(points, [SIGMA] * len(points), SIZE, cell=8)
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-7)  # float32 target


@pytest.mark.parametrize("edge", list(NEAR_EDGES))
def test_no_mass_further_than_five_sigma_from_its_head(edge):
    x, y = NEAR_EDGES[edge]
    rendered = D.render_density(np.array([[x, y]]), np.array([SIGMA]), SIZE)
    rows, cols = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    # The pixel's nearest point to the head, per axis: a pixel [j, j+1) is at distance max(0, j - x, x - j - 1).
    dx = np.maximum(0, np.maximum(cols - x, x - cols - 1))
    dy = np.maximum(0, np.maximum(rows - y, y - rows - 1))
    far = np.maximum(dx, dy) > 5 * SIGMA
    assert far.any()
    # Renormalization at most doubles a 1-D profile (a head on the edge keeps half), so 4 x the tail bound.
    assert rendered[far].sum() < 4 * math.erfc(5 / math.sqrt(2))


@pytest.mark.parametrize("cell", [1, 8])
def test_heads_past_the_valid_region_count_once_on_its_border(cell):
    # zoo/density.py clamps points into the valid region, so a head annotated just outside the image still counts.
    size, valid = (40, 56), (37, 50)
    outside = [(-4.0, 12.0), (61.0, 20.0), (30.0, -2.5), (18.0, 44.0), (-1.0, 39.0)]
    clamped = [(min(max(x, 0.0), valid[1]), min(max(y, 0.0), valid[0])) for x, y in outside]
    sigmas = np.full(len(outside), SIGMA)
    got = D.render_density(np.array(outside), sigmas, size, cell, valid)
    np.testing.assert_allclose(got, reference_map(clamped, sigmas, size, cell, valid), atol=1e-12)
    assert got.sum() == pytest.approx(len(outside))


@pytest.mark.parametrize("size", [(40, 56), (16, 8)])
def test_no_heads_is_a_zero_map_of_the_cell_grid(size):
    got = D.render_density(np.zeros((0, 2)), np.zeros(0), size, cell=8)
    assert got.shape == (size[0] // 8, size[1] // 8) and not got.any()


@pytest.mark.parametrize("size", [(42, 56), (40, 50)])
def test_a_map_side_that_is_not_a_multiple_of_the_cell_is_refused(size):
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} is not a multiple of 8"):
        D.render_density(np.array([[10.0, 10.0]]), np.array([SIGMA]), size, cell=8)


@pytest.mark.parametrize("bad", [{"sigma_mode": "knn"}, {"sigma": 0.0}, {"beta": -0.1}, {"neighbours": 0}])
def test_density_parameters_out_of_range_are_refused(bad):
    with pytest.raises(ZooError, match="sigma_mode|must be"):
        D.DensityParams(**bad)
    D.DensityParams(**{k: v for k, v in {"sigma_mode": "fixed", "sigma": 1.0, "beta": 0.5, "neighbours": 1}.items()
                       if k in bad})  # the same field in range is accepted
