"""Density targets' widths and the sigma cache, against values computed here: the widths a head gets in each sigma
mode (scaled with the image), what a crop without heads renders, which cache entry and file a set of points lands
in, and a cache file that another process holds locked."""

from __future__ import annotations

import fcntl
import json
import os
import re

import numpy as np
import pytest
import torch

from zoo.models import density as D


def mean_neighbour_distance(points: np.ndarray, k: int) -> np.ndarray:
    """Mean distance from each point to its k nearest other points, by sorting all pairwise distances."""
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, 1:k + 1].mean(axis=1)


def test_a_gaussian_far_from_the_borders_has_the_heads_mean_and_width():
    # Binning a normal into unit cells adds the variance of a uniform over one pixel, 1/12.
    x, y, sigma = 31.3, 22.6, 2.5
    rendered = D.render_density(np.array([[x, y]]), np.array([sigma]), (48, 64))
    rows, cols = np.mgrid[0:48, 0:64] + 0.5  # pixel centres
    assert rendered.sum() == pytest.approx(1, abs=1e-12)
    assert (rendered * cols).sum() == pytest.approx(x, abs=1e-9)
    assert (rendered * rows).sum() == pytest.approx(y, abs=1e-9)
    assert (rendered * (cols - x) ** 2).sum() == pytest.approx(sigma ** 2 + 1 / 12, rel=1e-6)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_the_fixed_width_scales_with_the_image(scale):
    encoder = D.DensityEncoder(D.DensityParams(sigma_mode="fixed", sigma=3.0), stride=8)
    points = np.array([[20.0, 12.0], [40.5, 30.0], [41.0, 33.0]])
    np.testing.assert_array_equal(encoder.sigmas(points, {"scale": scale}), [3.0 * scale] * 3)
    target = encoder(points, (48, 64), {"scale": scale})["density"]
    expected = D.render_density(points, np.full(3, 3.0 * scale), (48, 64), cell=8)
    np.testing.assert_allclose(target[0].double().numpy(), expected, rtol=1e-6, atol=1e-9)


def test_adaptive_widths_without_source_points_use_the_given_points_and_parameters():
    params = D.DensityParams(sigma=6.0, beta=0.5, neighbours=2)
    encoder = D.DensityEncoder(params)
    points = np.random.default_rng(11).uniform(0, 100, (7, 2))
    expected = np.maximum(0.5 * mean_neighbour_distance(points, 2), D.MIN_SIGMA)
    np.testing.assert_allclose(encoder.sigmas(points, {"scale": 0.5}), expected, rtol=1e-12)
    # A lone head has no neighbour: it gets the configured width, scaled with the image.
    assert encoder.sigmas(points[:1], {"scale": 0.5}).tolist() == [3.0]
    assert encoder.sigmas(points[:1], {"scale": 2.0}).tolist() == [12.0]


def test_widths_from_source_points_follow_point_ids_and_scale_in_float64():
    source = np.random.default_rng(12).uniform(0, 200, (30, 2))
    ids, scale = np.array([4, 17, 0, 29]), 0.37
    meta = {"dataset": "ids-test", "source_points": source, "point_ids": ids, "scale": scale}
    got = D.DensityEncoder().sigmas(source[ids] * scale, meta)
    cached = np.maximum(0.3 * mean_neighbour_distance(source, 3), D.MIN_SIGMA).astype(np.float32)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, cached[ids].astype(np.float64) * scale)


@pytest.mark.parametrize("point_ids", [[], np.zeros(0, np.int64)])
def test_a_crop_that_keeps_no_heads_renders_an_empty_float32_target(point_ids):
    source = np.random.default_rng(13).uniform(0, 200, (12, 2))
    meta = {"dataset": "empty-crop", "source_points": source, "point_ids": point_ids, "scale": 1.0}
    target = D.DensityEncoder(stride=8)(np.zeros((0, 2)), (32, 48), meta)["density"]
    assert target.dtype == torch.float32 and target.shape == (1, 4, 6) and not target.any()


def test_targets_are_float32_maps_of_the_stride_grid():
    target = D.DensityEncoder(stride=8)(np.array([[10.0, 5.0], [30.0, 20.0]]), (24, 40), {})["density"]
    assert target.dtype == torch.float32 and target.shape == (1, 3, 5)
    assert target.sum().item() == pytest.approx(2, abs=1e-5)


def test_a_lone_head_in_the_cache_gets_the_configured_width():
    cache = D.SigmaCache("lone-head", D.DensityParams(sigma=7.0))
    assert cache.sigmas(np.array([[5.0, 9.0]])).tolist() == [7.0]


def test_the_same_points_in_any_numeric_type_are_one_cache_entry(monkeypatch):
    calls = []
    real = D.adaptive_sigmas
    monkeypatch.setattr(D, "adaptive_sigmas", lambda *a, **k: calls.append(1) or real(*a, **k))
    points = np.random.default_rng(14).integers(0, 300, (20, 2))
    cache = D.SigmaCache("dtype-test", D.DensityParams())
    first = cache.sigmas(points.astype(np.float64))
    for same in (points, points.astype(np.float32), points.tolist()):
        np.testing.assert_array_equal(D.SigmaCache("dtype-test", D.DensityParams()).sigmas(same), first)
    assert len(calls) == 1


def test_each_dataset_has_its_own_cache_file_inside_the_cache_dir():
    source = np.random.default_rng(15).uniform(0, 64, (6, 2))
    unsafe, long = "/data/Shanghai Tech/part_A/", "x" * 300  # a name that looks like a path; one past a name's limit
    for name in ("SHA-train", "SHB.train", unsafe, long):
        D.DensityEncoder().sigmas(source, {"dataset": name, "source_points": source, "point_ids": np.arange(6)})
    folder = D.SigmaCache("any", D.DensityParams()).path.parent
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".h5"))
    assert len(files) >= 4 and all(len(f) < 100 for f in files)
    assert D.SigmaCache(unsafe, D.DensityParams()).path.name.startswith("data_Shanghai_Tech_part_A-")
    for name in ("SHA-train", "SHB.train", unsafe, long):
        path = D.SigmaCache(name, D.DensityParams()).path
        assert path.parent == folder and path.is_file()
    assert D.SigmaCache("SHA-train", D.DensityParams()).path.name.startswith("SHA-train-")


def test_the_cache_file_records_the_parameters_that_made_it():
    import h5py

    params = D.DensityParams(beta=0.4, neighbours=5)
    cache = D.SigmaCache("params-test", params)
    cache.sigmas(np.random.default_rng(16).uniform(0, 64, (8, 2)))
    with h5py.File(cache.path, "r") as f:
        assert D.DensityParams(**json.loads(f.attrs["params"])) == params


def test_a_cache_file_locked_by_another_process_is_still_read(monkeypatch):
    source = np.random.default_rng(17).uniform(0, 64, (9, 2))
    expected = D.SigmaCache("locked", D.DensityParams()).sigmas(source)
    calls = []
    monkeypatch.setattr(D, "adaptive_sigmas", lambda *a, **k: calls.append(1))
    fresh = D.SigmaCache("locked", D.DensityParams())
    fd = os.open(fresh.path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as an HDF5 writer elsewhere would hold it
        np.testing.assert_array_equal(fresh.sigmas(source), expected)
    finally:
        os.close(fd)
    assert not calls


@pytest.mark.parametrize("name", ["SHA-train", "Xcrowd.v2", "JHU_crowd_X"])
def test_a_dataset_name_of_safe_characters_is_kept_whole_in_its_file_name(name):
    path = D.SigmaCache(name, D.DensityParams()).path
    assert re.fullmatch(re.escape(name) + r"-[0-9a-f]+\.h5", path.name)


def test_an_image_shape_given_as_valid_size_is_refused_not_read_as_height_and_width():
    encoder = D.DensityEncoder(D.DensityParams(sigma_mode="fixed"), stride=8)
    with pytest.raises(ValueError):
        encoder(np.array([[10.0, 10.0]]), (32, 48), {"valid_size": (24, 40, 3)})


def test_a_cache_file_whose_arrays_disagree_never_yields_wrong_widths():
    import h5py

    source = np.random.default_rng(18).uniform(0, 64, (10, 2))
    cache = D.SigmaCache("disagreeing", D.DensityParams())
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(cache.path, "w") as f:  # two keys but one entry's offsets, and widths that are not the real ones
        f["keys"] = np.array([D._points_digest(source).encode(), b"0" * 40], dtype="S40")
        f["offsets"] = np.array([0, 5])
        f["sigmas"] = np.full(5, 99.0, np.float32)
    try:
        got = cache.sigmas(source)
    except ValueError:
        return
    np.testing.assert_allclose(got, np.maximum(0.3 * mean_neighbour_distance(source, 3), D.MIN_SIGMA), rtol=1e-6)
