"""The synthetic crowd generator: determinism, the ShanghaiTech files, scene content, safe installation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from scipy.spatial.distance import pdist
from support import assets_path

from zoo.core.errors import ZooError
from zoo.data import synthetic
from zoo.data.readers import MATLAB_OFFSET
from zoo.data.synthetic import (
    draw_person,
    ensure_synthetic,
    generate,
    head_radius,
    image_count,
    place_heads,
    render_scene,
    write_ground_truth,
)

SMALL = {"train": 3, "test": 2}
SIZE = (256, 384)


def relative_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def load_points(mat_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(location, number) read the way ShanghaiTech files are read, independently of any zoo reader."""
    record = scipy.io.loadmat(mat_path)["image_info"][0, 0][0, 0]
    return record[0], record[1]


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    first = generate(tmp_path / "a", seed=7, splits=SMALL)
    second = generate(tmp_path / "b", seed=7, splits=SMALL)
    other = generate(tmp_path / "c", seed=8, splits=SMALL)
    files = relative_files(first)
    assert files == relative_files(second) == relative_files(other)
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    images = [rel for rel in files if rel.suffix == ".jpg"]
    for rel in images:
        assert np.array_equal(cv2.imread(str(first / rel)), cv2.imread(str(second / rel)))
        assert not np.array_equal(cv2.imread(str(first / rel)), cv2.imread(str(other / rel)))
    for rel in [rel for rel in files if rel.suffix == ".mat"]:
        ours, theirs = load_points(first / rel)[0], load_points(other / rel)[0]
        assert ours.shape != theirs.shape or not np.array_equal(ours, theirs)


def test_a_split_does_not_depend_on_the_other_splits(tmp_path):
    together = generate(tmp_path / "all", seed=7, splits=SMALL)
    alone = generate(tmp_path / "alone", seed=7, splits={"test": 2})
    for rel in relative_files(alone / "test_data"):
        assert (together / "test_data" / rel).read_bytes() == (alone / "test_data" / rel).read_bytes()
    # Same index, different split: a different scene, not the same placement cut to another count.
    train, test = (load_points(together / f"{split}_data/ground-truth/GT_IMG_1.mat")[0] for split in SMALL)
    shared = min(len(train), len(test))
    assert not np.array_equal(train[:shared], test[:shared])


def test_mat_files_do_not_record_when_they_were_written(tmp_path, monkeypatch):
    points = np.array([[10.5, 20.25], [3.0, 4.0]])
    write_ground_truth(tmp_path / "early.mat", points)
    monkeypatch.setattr(time, "asctime", lambda *args: "Thu Jan  1 00:00:00 1970")
    write_ground_truth(tmp_path / "late.mat", points)
    assert (tmp_path / "early.mat").read_bytes() == (tmp_path / "late.mat").read_bytes()


def test_writes_shanghaitech_layout_with_points_inside_each_image(tmp_path):
    root = generate(tmp_path / "synthetic", seed=0, splits=SMALL, size=SIZE)
    assert {p.name for p in root.iterdir()} == {"train_data", "test_data", "manifest.json", "README.txt"}
    for split, n_images in SMALL.items():
        names = sorted(p.name for p in (root / f"{split}_data" / "images").iterdir())
        assert names == sorted(f"IMG_{k}.jpg" for k in range(1, n_images + 1))
        for k in range(1, n_images + 1):
            image = cv2.imread(str(root / f"{split}_data" / "images" / f"IMG_{k}.jpg"))
            location, number = load_points(root / f"{split}_data" / "ground-truth" / f"GT_IMG_{k}.mat")
            assert image.shape == (*SIZE, 3)
            assert location.dtype == np.float64 and location.ndim == 2 and location.shape[1] == 2
            assert number.shape == (1, 1)
            assert int(number[0, 0]) == len(location) == image_count(0, split, k - 1)
            assert np.all(location >= 0)
            assert np.all(location[:, 0] < SIZE[1]) and np.all(location[:, 1] < SIZE[0])


def test_mat_structure_matches_a_real_shanghaitech_file(tmp_path):
    real = scipy.io.loadmat(assets_path("people_counting_custom", "part_B", "train_data", "ground-truth",
                                        "GT_IMG_1.mat"))
    write_ground_truth(tmp_path / "ours.mat", np.array([[1.5, 2.5]]))
    ours = scipy.io.loadmat(tmp_path / "ours.mat")
    assert ours["image_info"].shape == real["image_info"].shape == (1, 1)
    assert ours["image_info"].dtype == real["image_info"].dtype == object
    ours_record, real_record = ours["image_info"][0, 0], real["image_info"][0, 0]
    assert ours_record.shape == real_record.shape and ours_record.dtype.names == real_record.dtype.names
    for ours_field, real_field in zip(ours_record[0, 0], real_record[0, 0], strict=True):
        assert ours_field.ndim == real_field.ndim == 2 and ours_field.dtype.kind == real_field.dtype.kind


@pytest.mark.parametrize("points", [np.zeros((0, 2)), np.array([[0.0, 0.0], [383.9375, 255.5], [17.3, 9.1]])])
def test_points_round_trip_exactly_including_none(tmp_path, points):
    write_ground_truth(tmp_path / "GT_IMG_1.mat", points)
    location, number = load_points(tmp_path / "GT_IMG_1.mat")
    assert location.shape == (len(points), 2) and int(number[0, 0]) == len(points)
    assert np.array_equal(location, points + MATLAB_OFFSET)  # the file holds MATLAB coordinates


def test_counts_span_sparse_to_dense_and_vary():
    counts = np.array([image_count(0, "train", i) for i in range(80)])
    assert counts.min() <= 8 and counts.max() >= 250
    # Log-uniform: each third of the log range holds a fair share of the images.
    thirds = np.digitize(np.log(counts), np.linspace(np.log(5), np.log(300), 4)[1:-1])
    assert np.bincount(thirds, minlength=3).min() >= 20
    # Even three consecutive images (a tiny test split) mix sparse and dense scenes.
    assert min(max(counts[i:i + 3]) / min(counts[i:i + 3]) for i in range(78)) >= 8


def test_heads_stay_inside_and_apart_even_when_crowded():
    # A tall, narrow frame has no room for 300 heads at their usual spacing: placement must still finish.
    for size, count in [(SIZE, 300), ((1024, 64), 300)]:
        points = place_heads(np.random.default_rng(3), count, size)
        assert points.shape == (count, 2)
        assert np.all(points >= 0) and np.all(points[:, 0] < size[1]) and np.all(points[:, 1] < size[0])
        assert pdist(points).min() >= synthetic.MIN_HEAD_GAP


def test_head_radius_grows_down_the_frame():
    radii = head_radius(np.arange(256), 256)
    assert np.all(np.diff(radii) > 0)
    assert 2 <= radii[0] <= 3 and 9 <= radii[-1] <= 10.5


def test_nearer_people_are_drawn_larger():
    key = [0, 1, 2]
    empty = render_scene(key, SIZE, np.zeros((0, 2))).astype(int)
    areas = []
    for y in (20.5, 200.5):
        scene = render_scene(key, SIZE, np.array([[192.5, y]]))
        changed = np.abs(scene - empty).sum(-1) > 30
        assert changed[int(y), 192], "the head centre pixel should show the head"
        areas.append(changed.sum())
    assert areas[1] > 4 * areas[0] > 0


def test_nearer_people_occlude_farther_ones():
    key, x = [4], 100.5
    far, near = [x, 200.5], [x, 215.5]  # the near head lies on the far person's body
    both = render_scene(key, SIZE, np.array([far, near])).astype(int)
    near_only = render_scene(key, SIZE, np.array([near])).astype(int)
    far_only = render_scene(key, SIZE, np.array([far])).astype(int)
    centre = (int(near[1]), int(x))
    assert np.abs(both[centre] - near_only[centre]).max() <= 1
    assert np.abs(both[centre] - far_only[centre]).sum() > 20


def test_heads_show_in_a_crowded_scene():
    points = place_heads(np.random.default_rng(5), 120, SIZE)
    empty = render_scene([5], SIZE, np.zeros((0, 2))).astype(int)
    scene = render_scene([5], SIZE, points)
    rows, cols = points[:, 1].astype(int), points[:, 0].astype(int)
    difference = np.abs(scene[rows, cols] - empty[rows, cols]).sum(-1)
    assert np.mean(difference > 20) >= 0.9


@pytest.mark.parametrize("x", [40.0, 40.3125, 47.5625])
def test_figure_is_centred_on_the_recorded_point(x):
    """Pixel column j covers [j, j+1): the intensity centroid of a symmetric figure is its recorded x."""
    blank = np.full((128, 96, 3), 128, np.uint8)
    canvas = blank.copy()
    draw_person(canvas, np.random.default_rng(0), x, 30.0, 9.0)
    weight = np.abs(canvas.astype(int) - blank).sum(axis=(0, 2))
    centroid = (weight * (np.arange(96) + 0.5)).sum() / weight.sum()
    assert centroid == pytest.approx(x, abs=0.05)


def test_interrupted_run_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    root = tmp_path / "synthetic"
    written = []

    def interrupt_after_two(path, points):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        real_writer(path, points)

    real_writer = synthetic.write_ground_truth
    monkeypatch.setattr(synthetic, "write_ground_truth", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate(root, splits=SMALL)
    assert list(tmp_path.iterdir()) == []

    # A killed process never cleans up: its staging directory stays behind, under another name.
    written.clear()
    monkeypatch.setattr(synthetic.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(KeyboardInterrupt):
        generate(root, splits=SMALL)
    monkeypatch.undo()
    assert not root.exists() and len(list(tmp_path.iterdir())) == 1
    ensure_synthetic(root, splits=SMALL)
    assert json.loads((root / "manifest.json").read_text())["splits"] == SMALL
    assert len(list((root / "train_data" / "ground-truth").iterdir())) == SMALL["train"]


def test_ensure_regenerates_only_when_parameters_change(tmp_path, monkeypatch):
    root = ensure_synthetic(tmp_path / "s", seed=1, splits={"train": 2})
    marker = root / "kept-if-not-regenerated"
    marker.touch()
    assert ensure_synthetic(root, seed=1, splits={"train": 2}) == root and marker.exists()

    first_image = cv2.imread(str(root / "train_data" / "images" / "IMG_1.jpg"))
    ensure_synthetic(root, seed=2, splits={"train": 2})
    assert not marker.exists()
    assert not np.array_equal(first_image, cv2.imread(str(root / "train_data" / "images" / "IMG_1.jpg")))

    ensure_synthetic(root, seed=2, splits={"train": 3})
    assert len(list((root / "train_data" / "images").iterdir())) == 3

    marker.touch()
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    ensure_synthetic(root, seed=2, splits={"train": 3})
    assert not marker.exists()


def test_default_root_is_under_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    assert ensure_synthetic(splits={"val": 1}) == tmp_path / "synthetic"
    assert (tmp_path / "synthetic" / "val_data" / "ground-truth" / "GT_IMG_1.mat").is_file()


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ZooError, match="mine.*not a synthetic dataset"):
        ensure_synthetic(foreign, splits=SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


@pytest.mark.parametrize("splits, size", [({"train": -1}, SIZE), ({"../x": 1}, SIZE), ({"a": 1}, (32, 384))])
def test_bad_parameters_are_user_errors(tmp_path, splits, size):
    with pytest.raises(ZooError, match="synthetic dataset"):
        generate(tmp_path / "s", splits=splits, size=size)
