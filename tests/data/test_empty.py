"""Empty scenes: the windows cut from annotated photos hold no head, and the generated ones are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import empty
from zoo.data.readers import load_image, read_shanghaitech
from zoo.data.synthetic import generate


def test_a_window_is_empty_only_when_no_point_lies_within_the_margin():
    points = np.array([[10.0, 10.0], [70.0, 40.0]])
    corners = empty.empty_windows(points, height=64, width=128, size=32, margin=4, step=16)
    for x, y in corners:
        near = ((points[:, 0] >= x - 4) & (points[:, 0] <= x + 36) & (points[:, 1] >= y - 4)
                & (points[:, 1] <= y + 36))
        assert not near.any()
    expected = {(x, y) for y in (0, 16, 32) for x in range(0, 97, 16)
                if not any(x - 4 <= px <= x + 36 and y - 4 <= py <= y + 36 for px, py in points)}
    assert set(corners) == expected and (96, 0) in corners
    # a point exactly on the margin's edge belongs to the window
    assert (32, 0) not in empty.empty_windows(np.array([[28.0, 5.0]]), 64, 128, 32, 4, 16)
    assert empty.empty_windows(np.zeros((0, 2)), 32, 32, 32, 4, 16) == [(0, 0)]


def test_background_crops_hold_no_head_and_are_reproducible(tmp_path):
    root = generate(tmp_path / "data", seed=3, splits={"train": 6}, size=(256, 384))
    records = read_shanghaitech(root, "train")
    crops = empty.background_crops(records, size=64, margin=8, limit=5, seed=1)
    again = empty.background_crops(records, size=64, margin=8, limit=5, seed=1)
    assert 0 < len(crops) <= 5
    assert [c.name for c in crops] == [c.name for c in again]
    by_name = {r.image.name: r for r in records}
    for crop in crops:
        photo, _, corner = crop.name.partition("@")
        x, y = map(int, corner.split(","))
        points = by_name[photo].points
        assert not ((points[:, 0] >= x - 8) & (points[:, 0] <= x + 72) & (points[:, 1] >= y - 8)
                    & (points[:, 1] <= y + 72)).any()
        assert crop.image.shape == (64, 64, 3) and crop.kind == "background"
        assert np.array_equal(crop.image, load_image(by_name[photo].image)[y:y + 64, x:x + 64])


def test_background_crops_decode_only_the_photos_they_cut_from_one_at_a_time(tmp_path, monkeypatch):
    records = read_shanghaitech(generate(tmp_path / "data", seed=3, splits={"train": 6}, size=(256, 384)), "train")
    decoded = []
    monkeypatch.setattr(empty, "load_image", lambda path: decoded.append(path.name) or load_image(path))
    crops = empty.background_crops(records, size=64, margin=8, limit=3, seed=1)
    photos = [c.name.partition("@")[0] for c in crops]
    assert decoded == list(dict.fromkeys(photos)) and len(decoded) < len(records)


@pytest.mark.parametrize("kind", ["blank", "texture", "synthetic"])
def test_generated_scenes_depend_on_seed_split_and_index_only(kind):
    val = empty.generated(kind, 4, seed=0, split="val", size=(48, 40))
    assert [s.image.shape for s in val] == [(48, 40, 3)] * 4 and all(s.image.dtype == np.uint8 for s in val)
    assert all(np.array_equal(a.image, b.image)
               for a, b in zip(val, empty.generated(kind, 4, seed=0, split="val", size=(48, 40)), strict=True))
    test = empty.generated(kind, 4, seed=0, split="test", size=(48, 40))
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(val, test, strict=True))
    assert len({s.name for s in val + test}) == 8


def test_a_blank_scene_is_one_colour():
    for scene in empty.generated("blank", 6, seed=1, split="val", size=(16, 16)):
        assert (scene.image == scene.image[0, 0]).all()
