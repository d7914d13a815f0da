"""Readers: every format yields the points that were written, the real assets give their published counts, and
every kind of bad input gives one ZooError line naming the file and the problem (all of them in `check_dataset`).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from support import assets_path, write_mat
from support.datasets import (
    BREAKAGES,
    HEIGHT,
    WIDTH,
    mat_path,
    random_points,
    write_broken_shanghaitech,
    write_image,
    write_shanghaitech,
)

from zoo.core.errors import ZooError
from zoo.data.check import check_dataset
from zoo.data.dataset import PointDataset
from zoo.data.readers import detect_format, image_size, load_image, read_records


def test_written_mat_mirrors_the_real_shanghaitech_structure(tmp_path):
    real = scipy.io.loadmat(assets_path("people_counting_custom", "part_B", "train_data", "ground-truth",
                                        "GT_IMG_1.mat"))["image_info"]
    ours = scipy.io.loadmat(write_mat(tmp_path / "GT_IMG_1.mat", np.ones((4, 2))))["image_info"]
    for mat in (real, ours):
        assert mat.dtype == object and mat.shape == (1, 1)
        struct = mat[0, 0]
        assert struct.shape == (1, 1) and struct.dtype.names == ("location", "number")
        location, number = struct[0, 0]
        assert location.dtype == np.float64 and location.ndim == 2 and location.shape[1] == 2
        assert number.shape == (1, 1) and int(number[0, 0]) == len(location)


def test_shanghaitech_reader_returns_the_written_points_in_natural_order(tmp_path):
    counts = {"train": [3, 0, 5, 1, 2, 4, 2, 6, 1, 9], "test": [2, 0]}  # IMG_10 must sort after IMG_2
    written = write_shanghaitech(tmp_path, counts)
    assert detect_format(tmp_path) == "shanghaitech"
    for split, split_counts in counts.items():
        records = read_records(tmp_path, split)
        assert [r.image.name for r in records] == [f"IMG_{k}.jpg" for k in range(1, len(split_counts) + 1)]
        for k, record in enumerate(records, 1):
            assert record.points.dtype == np.float32 and record.points.shape == (split_counts[k - 1], 2)
            np.testing.assert_allclose(record.points, written[split, k], rtol=1e-6)
            assert record.source.name == f"GT_IMG_{k}.mat" and not record.problems
    everything = read_records(tmp_path)
    assert len(everything) == 12 and sum(len(r.points) for r in everything) == sum(map(sum, counts.values()))
    assert check_dataset(tmp_path)["min"] == 0  # the empty images are counted, not rejected


def test_p2pnet_list_reader(tmp_path):
    rng = np.random.default_rng(1)
    lines, written = [], []
    for i, count in enumerate([4, 0, 2]):
        write_image(tmp_path / "scenes" / f"s{i}.jpg", seed=i)
        written.append(random_points(rng, count))
        body = "".join(f"{x:.6f} {y:.6f}\n\n" for x, y in written[-1])  # blank lines are allowed
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"s{i}.txt").write_text(body)
        lines.append(f"scenes/s{i}.jpg labels/s{i}.txt")
    listing = tmp_path / "train.list"
    listing.write_text("\n".join(lines) + "\n")
    assert detect_format(listing) == "p2pnet"
    records = read_records(listing)
    assert [r.image for r in records] == [tmp_path / "scenes" / f"s{i}.jpg" for i in range(3)]
    for record, points in zip(records, written, strict=True):
        np.testing.assert_allclose(record.points.reshape(-1, 2), points.reshape(-1, 2), atol=1e-5)
    assert check_dataset(listing)["heads"] == 6


def write_cells(folder: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    """NNNcell.png images (with red pixels that must be ignored) and NNNdots.png with pure red dots among
    near-red and white distractors; returns the expected points, computed by a pixel loop."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected = []
    for i in range(1, n + 1):
        cell = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        cell[::7, ::5] = (255, 0, 0)
        dots = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for colour in ((254, 0, 0), (255, 0, 1), (255, 255, 255), (255, 0, 0)):
            rows, cols = rng.integers(0, HEIGHT, 30), rng.integers(0, WIDTH, 30)
            dots[rows, cols] = colour
        cv2.imwrite(str(folder / f"{i:03d}cell.png"), cell[..., ::-1])
        cv2.imwrite(str(folder / f"{i:03d}dots.png"), dots[..., ::-1])
        expected.append([(j + 0.5, r + 0.5) for r in range(HEIGHT) for j in range(WIDTH)
                         if tuple(dots[r, j]) == (255, 0, 0)])
    return expected


def test_cells_reader_puts_each_red_pixel_at_its_centre(tmp_path):
    expected = write_cells(tmp_path, 3)
    assert detect_format(tmp_path) == "cells"
    records = read_records(tmp_path)
    assert [r.image.name for r in records] == ["001cell.png", "002cell.png", "003cell.png"]
    for record, points in zip(records, expected, strict=True):
        assert sorted(map(tuple, record.points.tolist())) == sorted(points)


def test_json_reader(tmp_path):
    rng = np.random.default_rng(2)
    written = [random_points(rng, 3), random_points(rng, 0)]
    for i in range(2):
        write_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    doc = {"images": [{"file": f"imgs/{i}.png", "points": p.tolist()} for i, p in enumerate(written)]}
    path = tmp_path / "points.json"
    path.write_text(json.dumps(doc))
    assert detect_format(path) == "json"
    records = read_records(path)
    assert [r.image for r in records] == [tmp_path / "imgs" / "0.png", tmp_path / "imgs" / "1.png"]
    for record, points in zip(records, written, strict=True):
        np.testing.assert_allclose(record.points.reshape(-1, 2), points.reshape(-1, 2), rtol=1e-6)
    report = check_dataset(path)
    assert (report["images"], report["heads"], report["problems"]) == (2, 3, [])


def test_auto_format_reads_the_same_records_as_the_explicit_one(tmp_path):
    write_shanghaitech(tmp_path / "sh", {"train": [2, 3]})
    write_cells(tmp_path / "cells", 2)
    for folder, fmt in ((tmp_path / "sh", "shanghaitech"), (tmp_path / "cells", "cells")):
        auto, explicit = read_records(folder), read_records(folder, fmt=fmt)
        assert [r.image for r in auto] == [r.image for r in explicit]
        assert all(np.array_equal(a.points, e.points) for a, e in zip(auto, explicit, strict=True))


# ---- the real assets ------------------------------------------------------------------------------------------

def test_part_b_counts():
    root = assets_path("people_counting_custom", "part_B")
    for split, (images, heads) in {"train": (30, 487), "test": (8, 136)}.items():
        records = read_records(root, split)
        assert (len(records), sum(len(r.points) for r in records)) == (images, heads)
        for record in records:  # the file's own count field agrees with the points read
            assert int(scipy.io.loadmat(record.source)["image_info"][0, 0][0, 0][1][0, 0]) == len(record.points)
    report = check_dataset(root)
    assert (report["images"], report["heads"], report["problems"], report["warnings"]) == (38, 623, [], [])


def test_vgg_cells_counts():
    report = check_dataset(assets_path("cells_vgg", "cells"))
    assert (report["images"], report["heads"], report["min"], report["max"]) == (200, 35192, 74, 317)
    assert report["problems"] == []


# ---- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_each_bad_input_is_one_line_naming_the_file(tmp_path, breakage):
    [(bad_file, word)], good_heads = write_broken_shanghaitech(tmp_path, [breakage])
    report = check_dataset(tmp_path)
    assert len(report["problems"]) == 1, report["problems"]
    message = report["problems"][0]
    assert "\n" not in message and str(bad_file) in message and word in message
    assert (report["images"], report["readable_images"], report["heads"]) == (2, 1, good_heads)
    dataset = PointDataset(read_records(tmp_path), "broken", stride=8)
    with pytest.raises(ZooError) as raised:
        dataset[0]
    assert str(raised.value) == message
    assert len(dataset[1]["points"]) == good_heads


def test_check_reports_every_problem_of_a_dataset(tmp_path):
    expected, good_heads = write_broken_shanghaitech(tmp_path, list(BREAKAGES))
    report = check_dataset(tmp_path)
    assert len(report["problems"]) == len(expected)
    for message, (bad_file, word) in zip(report["problems"], expected, strict=True):
        assert str(bad_file) in message and word in message
    assert report["heads"] == good_heads


def test_points_outside_the_image_are_a_warning_and_dropped(tmp_path):
    write_shanghaitech(tmp_path, {"train": [1]})
    inside = [[0.0, 0.0], [WIDTH - 0.01, HEIGHT - 0.01], [10.5, 20.5]]
    outside = [[-0.5, 3.0], [WIDTH, 3.0], [3.0, HEIGHT + 7]]
    write_mat(mat_path(tmp_path, 1), [outside[0], *inside[:2], *outside[1:], inside[2]])
    report = check_dataset(tmp_path)
    assert report["problems"] == [] and report["heads"] == 3
    [warning] = report["warnings"]
    assert str(mat_path(tmp_path, 1)) in warning and "3 point(s) outside" in warning
    item = PointDataset(read_records(tmp_path), "outside", stride=16)[0]
    np.testing.assert_allclose(item["points"].numpy(), inside)
    np.testing.assert_array_equal(item["meta"]["point_ids"], [1, 2, 5])


def test_empty_folder_and_empty_image_folder(tmp_path):
    with pytest.raises(ZooError, match=f"{tmp_path}: cannot tell the dataset format"):
        check_dataset(tmp_path)
    (tmp_path / "train_data" / "images").mkdir(parents=True)
    with pytest.raises(ZooError, match="images: no images found"):
        check_dataset(tmp_path)


def test_wrong_format_name(tmp_path):
    write_shanghaitech(tmp_path, {"train": [1]})
    with pytest.raises(ZooError, match="unknown dataset format 'shanghai'"):
        check_dataset(tmp_path, "shanghai")
    with pytest.raises(ZooError, match="no NNNcell.png"):
        check_dataset(tmp_path, "cells")


def test_p2pnet_bad_text_files(tmp_path):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("1 2\n3\n")
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg a.txt\n")
    [problem] = check_dataset(listing)["problems"]
    # the list line, then the file and line at fault; '3' is not silently paired with the 1
    assert problem == f"{listing}:1: {tmp_path / 'a.txt'}:2: expected 'x y', got '3'"
    with pytest.raises(ZooError, match="a.jpg: not a UTF-8 text file"):
        check_dataset(tmp_path / "a.jpg", "p2pnet")  # an image given where the list file belongs
    listing.write_text("a.jpg\n")
    with pytest.raises(ZooError, match="list.txt:1: expected 'IMAGE ANNOTATION'"):
        read_records(listing)


def test_json_bad_points_are_problems_naming_the_entry(tmp_path):
    write_image(tmp_path / "a.png")
    path = tmp_path / "points.json"
    entries = [[[1, 2], [float("nan"), 3]], [[1, 2], [3]], [1, 2], [["a", 3]]]
    path.write_text(json.dumps({"images": [{"file": "a.png", "points": p} for p in entries]}))
    problems = check_dataset(path)["problems"]
    assert len(problems) == len(entries)
    for i, problem in enumerate(problems):
        assert problem.startswith(f"{path}: images[{i}]") and problem.count(str(path)) == 1


# ---- image modes and conventions ------------------------------------------------------------------------------

def _pil_palette(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


IMAGE_MODES = {  # how to write the file; a word of the `data check` warning
    "gray.jpg": (lambda p: write_image(p, channels=1), "grayscale"),
    "gray.png": (lambda p: write_image(p, channels=1), "grayscale"),
    "rgba.png": (lambda p: write_image(p, channels=4), "alpha"),
    "palette.png": (_pil_palette, "palette"),
    "gray16.png": (lambda p: write_image(p, channels=1, dtype=np.uint16), "16-bit"),
    "rgb16.png": (lambda p: write_image(p, channels=3, dtype=np.uint16), "16-bit"),
}


@pytest.mark.parametrize("name", list(IMAGE_MODES))
def test_images_convert_as_opencv_imread_color_does(tmp_path, name):
    write, word = IMAGE_MODES[name]
    path = write(tmp_path / name)
    # The reference: OpenCV's own conversion (what published P2PNet loads with), orientation ignored.
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[..., ::-1]
    np.testing.assert_array_equal(load_image(path), expected)
    assert image_size(path) == expected.shape[:2]  # from the header, without decoding
    if "16" in name:  # 16-bit samples are scaled by >> 8 (not clipped, not divided by 257)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(load_image(path)[..., 0], (raw if raw.ndim == 2 else raw[..., 2]) >> 8)
    (tmp_path / "a.txt").write_text("3 4\n")
    (tmp_path / "list.txt").write_text(f"{name} a.txt\n")
    report = check_dataset(tmp_path / "list.txt")
    assert report["problems"] == [] and report["heads"] == 1
    assert all(w.startswith(f"{path}: ") for w in report["warnings"])
    assert any(word in w for w in report["warnings"])


def test_exif_orientation_is_ignored_and_reported(tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    pixels = np.stack([xx * 4, yy * 5, xx + yy], -1).astype(np.uint8)  # smooth: JPEG keeps it to a few levels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    assert cv2.imread(str(path)).shape[:2] == (WIDTH, HEIGHT)  # OpenCV's default would apply it
    image = load_image(path)
    assert image.shape[:2] == (HEIGHT, WIDTH) == image_size(path)  # the stored grid, which annotations refer to
    assert np.abs(image.astype(int) - pixels).mean() < 3  # the same pixels, not rotated (JPEG noise only)
    (tmp_path / "a.txt").write_text("3 4\n")
    (tmp_path / "list.txt").write_text("rotated.jpg a.txt\n")
    [warning] = check_dataset(tmp_path / "list.txt")["warnings"]
    assert "EXIF orientation 6 ignored" in warning


def test_mat_points_are_matlab_coordinates(tmp_path):
    """A head clicked on MATLAB pixel (column 5, row 3), stored as (5, 3), is the zoo's (4.5, 2.5): the centre of
    0-based pixel (4, 2)."""
    write_shanghaitech(tmp_path, {"train": [1]})
    struct = np.zeros((1, 1), dtype=[("location", object), ("number", object)])
    struct[0, 0]["location"] = np.array([[5.0, 3.0]])
    struct[0, 0]["number"] = np.array([[1]], np.uint8)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = struct
    scipy.io.savemat(str(mat_path(tmp_path, 1)), {"image_info": cell})
    np.testing.assert_array_equal(read_records(tmp_path)[0].points, [[4.5, 2.5]])
