"""Joint transforms keep every surviving point on the image content it marked, drop the others, and track ids.

Two independent witnesses of "the same content" (hypothesis is not installed in the venv, so each property runs
over many seeded random cases):
- a coordinate-coded image (each pixel stores its own source column and row) for the exact, integer-aligned
  transforms: the pixel under a moved point must name the source pixel of that point;
- uniquely coloured squares for resizing, where interpolation blurs edges: the colour under a moved point must
  be its square's colour, and a fully visible square's colour-weighted centroid must sit on the moved point.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from support import IMAGENET_MEAN, IMAGENET_STD

from zoo.data import transforms as T
from zoo.data.collate import collate
from zoo.data.dataset import PointDataset
from zoo.data.readers import Record

PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
                    (255, 255, 255), (255, 128, 0)], np.uint8)
RADIUS = 3  # squares of 7 x 7 pixels centred on each point
SEPARATION = 24  # minimum Chebyshev distance between square centres, so squares stay apart at scale 0.5
COLOUR_TOLERANCE = 12  # max abs channel difference under a point after resizing (measured worst: 0)
CENTROID_TOLERANCE = 0.2  # px; measured worst 0.08 at scales 0.5-2; a half-pixel convention slip moves it >= 0.25


# ---- image builders -------------------------------------------------------------------------------------------

def coded_image(height: int, width: int) -> np.ndarray:
    """R = column, G = row, B = 255 marks a real pixel (zero padding has B = 0). Sizes stay below 256."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols, rows, np.full_like(rows, 255)], axis=2).astype(np.uint8)


def random_points(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """Sub-pixel points anywhere in the image."""
    return np.stack([rng.uniform(0, width, count), rng.uniform(0, height, count)], 1).astype(np.float32)


def squares_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Black image with up to len(PALETTE) well-separated coloured squares; points at their centres."""
    image = np.zeros((height, width, 3), np.uint8)
    centres = []
    for _ in range(200):
        c = rng.integers([RADIUS, RADIUS], [width - RADIUS, height - RADIUS])
        if all(np.abs(c - o).max() >= SEPARATION for o in centres):
            centres.append(c)
        if len(centres) == len(PALETTE):
            break
    for k, (cx, cy) in enumerate(centres):
        image[cy - RADIUS:cy + RADIUS + 1, cx - RADIUS:cx + RADIUS + 1] = PALETTE[k]
    # Pixel (row cy, column cx) covers [cx, cx+1) x [cy, cy+1): its centre is (cx + 0.5, cy + 0.5).
    return image, np.array(centres, np.float32).reshape(-1, 2) + 0.5


def make_sample(image: np.ndarray, points: np.ndarray) -> T.Sample:
    return T.Sample(image, points.astype(np.float32), np.arange(len(points)))


# ---- witnesses ------------------------------------------------------------------------------------------------

def assert_on_coded_content(out: T.Sample, source_points: np.ndarray) -> None:
    """Exact transforms: every surviving point lies on the pixel that held it, and every point whose pixel is
    still visible survives."""
    cols, rows = np.floor(out.points).astype(int).T
    under = out.image[rows, cols].astype(int)
    assert (under[:, 2] == 255).all(), "a point landed on padding"
    np.testing.assert_array_equal(under[:, :2], np.floor(source_points[out.ids]).astype(int))
    real = out.image[..., 2] == 255
    visible = {(int(c), int(r)) for c, r in out.image[real][:, :2]}
    expected = [i for i, p in enumerate(np.floor(source_points).astype(int)) if (p[0], p[1]) in visible]
    np.testing.assert_array_equal(np.sort(out.ids), expected)


def assert_on_coloured_squares(image: np.ndarray, points: np.ndarray, ids: np.ndarray, scale: float,
                               valid: tuple[int, int]) -> None:
    """Resized images: the colour under each point is its square's, and unclipped squares' centroids match.
    `valid` is the (h, w) of real content: beyond it lies padding, and a square may have been cut there."""
    h, w = valid
    for (x, y), k in zip(points, ids, strict=True):
        colour = PALETTE[k].astype(int)
        under = image[int(y), int(x)].astype(int)
        assert np.abs(under - colour).max() <= COLOUR_TOLERANCE, f"point {k} at ({x:.2f}, {y:.2f}) is on {under}"
        half = int(np.ceil((RADIUS + 1.5) * scale)) + 1
        y0, y1, x0, x1 = int(y) - half, int(y) + half + 1, int(x) - half, int(x) + half + 1
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            continue  # the square may be cut by a crop's edge: its centroid would be biased
        window = image[y0:y1, x0:x1].astype(np.float64)
        weight = window.sum(axis=2) / colour.sum()
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        centroid = np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()
        assert np.abs(centroid - (x, y)).max() <= CENTROID_TOLERANCE, (k, centroid, (x, y), scale)


def assert_fully_visible_squares_survive(image: np.ndarray, ids: np.ndarray, n_points: int,
                                         valid: tuple[int, int]) -> None:
    """A square whose pure pixels appear and none touches the content's edge is wholly inside, so its point must
    survive."""
    h, w = valid
    for k in range(n_points):
        pure = np.abs(image[:h, :w].astype(int) - PALETTE[k].astype(int)).max(axis=2) <= COLOUR_TOLERANCE
        rows, cols = np.nonzero(pure)
        inner = len(rows) and rows.min() > 0 and cols.min() > 0 and rows.max() < h - 1 and cols.max() < w - 1
        if inner:
            assert k in ids, f"square {k} is fully visible but its point was dropped"


# ---- exact transforms: crop, random crop, flip, padding --------------------------------------------------------

EXACT_OPS = {
    "random_crop": lambda s, rng: T.random_crop(s, rng, int(rng.integers(8, max(s.size) + 24))),
    "crop_containing": lambda s, rng: T.crop_containing(s, rng, int(rng.integers(8, max(s.size) + 24)),
                                                        rng.uniform(0, s.size[::-1])),
    "crop": lambda s, rng: T.crop(s, int(rng.integers(-20, s.size[0])), int(rng.integers(-20, s.size[1])),
                                  int(rng.integers(1, 80)), int(rng.integers(1, 80))),
    "hflip": lambda s, rng: T.hflip(s),
    "rot90": lambda s, rng: T.rot90(s, int(rng.integers(1, 4))),
    "pad": lambda s, rng: T.pad_to_multiple(s, int(rng.choice([8, 16, 32]))),
}


@pytest.mark.parametrize("case", range(300))
def test_exact_transforms_keep_points_on_their_pixels(case):
    rng = np.random.default_rng(case)
    h, w = rng.integers(20, 120, size=2)
    source = random_points(rng, h, w, int(rng.integers(0, 30)))
    sample = make_sample(coded_image(h, w), source)
    for name in rng.choice(list(EXACT_OPS), size=int(rng.integers(1, 5))):
        sample = EXACT_OPS[name](sample, rng)
    assert_on_coded_content(sample, source)


def test_crop_drops_points_outside_and_keeps_source_rows():
    points = np.array([[0.0, 0.0], [9.99, 5.0], [10.0, 5.0], [3.5, 19.99], [3.5, 20.0], [15.0, 1.0]], np.float32)
    sample = make_sample(coded_image(30, 40), points)
    out = T.crop(sample, top=0, left=0, height=20, width=10)
    np.testing.assert_array_equal(out.ids, [0, 1, 3])
    np.testing.assert_allclose(out.points, points[[0, 1, 3]])
    shifted = T.crop(sample, top=-5, left=5, height=20, width=20)  # overhangs the top: 5 rows of padding
    np.testing.assert_array_equal(shifted.ids, [1, 2, 5])
    np.testing.assert_allclose(shifted.points, points[[1, 2, 5]] - np.array([5, -5], np.float32))
    assert (shifted.image[:5] == 0).all() and (shifted.image[5:, :, 2] == 255).all()


@pytest.mark.parametrize("size", [1, 16, 40])
def test_crop_containing_holds_its_point_and_reaches_every_window_that_does(size):
    rng = np.random.default_rng(size)
    sample = make_sample(coded_image(40, 60), np.array([[3.5, 38.2], [58.9, 0.1], [30.0, 20.0]], np.float32))
    for k, point in enumerate(sample.points):
        tops, lefts = set(), set()
        for _ in range(400):
            out = T.crop_containing(sample, rng, size, point)
            assert k in out.ids
            tops.add(int(out.image[0, 0, 1]))  # the window's corner pixel codes its row and column
            lefts.add(int(out.image[0, 0, 0]))
        x, y = int(point[0]), int(point[1])
        # Reference: every in-image window of this size whose pixels include the point's.
        expected_tops = {t for t in range(0, 40 - size + 1) if t <= y < t + size}
        expected_lefts = {c for c in range(0, 60 - size + 1) if c <= x < c + size}
        assert tops == expected_tops and lefts == expected_lefts


def test_hflip_maps_pixel_edges_exactly():
    sample = make_sample(coded_image(4, 10), np.array([[0.0, 1.0], [0.5, 1.0], [9.75, 2.0]], np.float32))
    out = T.hflip(sample)
    np.testing.assert_allclose(out.points[:, 0], [10.0, 9.5, 0.25])
    assert out.image[0, 0, 0] == 9 and out.image[0, 9, 0] == 0


def test_rot90_turns_counter_clockwise_like_numpy():
    sample = make_sample(coded_image(4, 10), np.array([[0.5, 0.5], [9.75, 2.0]], np.float32))
    out = T.rot90(sample, 1)
    assert out.size == (10, 4) and out.image[9, 0, 0] == 0 and out.image[0, 0, 0] == 9  # column 9 is now row 0
    np.testing.assert_allclose(out.points, [[0.5, 9.5], [2.0, 0.25]])
    back = T.rot90(out, 3)
    np.testing.assert_array_equal(back.image, sample.image)
    np.testing.assert_allclose(back.points, sample.points, atol=1e-6)


# ---- resizing and the training composition --------------------------------------------------------------------

@pytest.mark.parametrize("case", range(60))
def test_scaling_compositions_keep_points_on_their_squares(case):
    rng = np.random.default_rng(1000 + case)
    h, w = rng.integers(48, 110, size=2)
    image, points = squares_image(rng, h, w)
    sample = make_sample(image, points)
    scale = T.random_scale(sample, rng, 0.5, 2.0)
    assert scale.scale == pytest.approx(np.sqrt(scale.size[0] * scale.size[1] / (h * w)))
    out = T.random_crop(scale, rng, int(rng.integers(16, 96)))
    if rng.random() < 0.5:
        out = T.hflip(out)
    out = T.pad_to_multiple(out, 16)
    for stage in (scale, out):
        valid = stage.valid_size or stage.size
        assert_on_coloured_squares(stage.image, stage.points, stage.ids, stage.scale, valid)
        assert_fully_visible_squares_survive(stage.image, stage.ids, len(points), valid)


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    rgb = (image * IMAGENET_STD + IMAGENET_MEAN) * 255
    return rgb.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def write_squares_dataset(tmp_path, seed: int = 0, n: int = 3) -> list[Record]:
    """PNG images with coloured squares, plus three annotated points outside each image (rows 0 to 2)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        h, w = rng.integers(60, 100, size=2)
        image, points = squares_image(rng, h, w)
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        outside = np.array([[-1.0, 5.0], [w, 3.0], [4.0, h + 0.5]], np.float32)
        records.append(Record(path, np.concatenate([outside, points]), path))
    return records


@pytest.mark.parametrize("rotate", [False, True])
def test_point_dataset_training_crops_keep_points_on_content(tmp_path, rotate):
    records = write_squares_dataset(tmp_path)
    dataset = PointDataset(records, "squares", stride=8, train=True, crop_size=32, crops_per_image=2,
                           scale_range=(0.6, 1.6), flip=True, rotate=rotate, seed=3)
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            for item in dataset[index]:
                image = tensor_to_uint8(item["image"])
                ids = item["meta"]["point_ids"]
                assert image.shape[:2] == (32, 32) and (ids >= 3).all()  # out-of-image rows never appear
                assert_on_coloured_squares(image, item["points"].numpy(), ids - 3, item["meta"]["scale"],
                                           item["meta"]["valid_size"])
                assert_fully_visible_squares_survive(image, ids - 3, len(records[index].points) - 3,
                                                     item["meta"]["valid_size"])


def test_head_crops_hold_a_head_where_random_crops_often_hold_none(tmp_path):
    record = write_squares_dataset(tmp_path, n=1)[0]
    sparse = replace(record, points=record.points[3:4])  # one head in a 60-100 px image, 16 px crops

    def heads(share: float) -> list[int]:
        dataset = PointDataset([sparse], "one", stride=8, train=True, crop_size=16, crops_per_image=4,
                               head_crops=share, seed=1)
        found = []
        for epoch in range(25):
            dataset.set_epoch(epoch)
            found += [len(item["points"]) for item in dataset[0]]
        return found

    assert min(heads(1.0)) == 1
    assert np.mean([n > 0 for n in heads(0.0)]) < 0.3
    assert 0.3 < np.mean([n > 0 for n in heads(0.5)]) < 0.85


def test_point_dataset_drops_out_of_image_points_on_load(tmp_path):
    record = write_squares_dataset(tmp_path, n=1)[0]
    dataset = PointDataset([record], "squares", stride=16)
    item = dataset[0]
    h, w = cv2.imread(str(record.image)).shape[:2]
    np.testing.assert_array_equal(item["meta"]["point_ids"], np.arange(3, len(record.points)))
    np.testing.assert_allclose(item["points"].numpy(), record.points[3:])
    assert item["meta"]["valid_size"] == (h, w)
    assert item["image"].shape[1] % 16 == 0 and item["image"].shape[2] % 16 == 0
    assert (item["image"][:, h:] == 0).all() and (item["image"][:, :, w:] == 0).all()


def test_point_dataset_training_items_depend_only_on_seed_epoch_index(tmp_path):
    records = write_squares_dataset(tmp_path)

    def items(epoch: int, seed: int = 5):
        dataset = PointDataset(records, "squares", stride=8, train=True, crop_size=32, crops_per_image=2,
                               scale_range=(0.5, 2.0), flip=True, jitter=0.2, seed=seed)
        dataset.set_epoch(epoch)
        return [crop for index in range(len(dataset)) for crop in dataset[index]]

    def same(a, b):
        return all(torch.equal(x["image"], y["image"]) and torch.equal(x["points"], y["points"])
                   for x, y in zip(a, b, strict=True))

    first = items(epoch=2)
    assert same(first, items(epoch=2))  # a fresh dataset (e.g. after a resume) draws the same augmentations
    assert not same(first, items(epoch=3))
    assert not same(first, items(epoch=2, seed=6))


# ---- tensors and collate --------------------------------------------------------------------------------------

def test_color_jitter_changes_pixels_only():
    rng = np.random.default_rng(0)
    sample = make_sample(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), random_points(rng, 20, 30, 5))
    out = T.color_jitter(sample, rng, 0.3)
    assert out.image.shape == sample.image.shape and not np.array_equal(out.image, sample.image)
    np.testing.assert_array_equal(out.points, sample.points)
    np.testing.assert_array_equal(out.ids, sample.ids)


@pytest.mark.parametrize("size", [(17, 33), (32, 48), (1, 1)])
def test_to_tensor_normalizes_content_and_keeps_padding_zero(size):
    rng = np.random.default_rng(size[0])
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    padded = T.pad_to_multiple(T.pad_to_multiple(make_sample(image, np.zeros((0, 2))), 8), 16)
    tensor = T.to_tensor(padded)
    h, w = size
    assert padded.valid_size == size and tensor.shape == (3, -h % 16 + h, -w % 16 + w)
    rgb = torch.from_numpy(image).permute(2, 0, 1).double() / 255
    expected = (rgb - IMAGENET_MEAN.double()) / IMAGENET_STD.double()
    torch.testing.assert_close(tensor[:, :h, :w].double(), expected, rtol=0, atol=1e-5)
    assert (tensor[:, h:] == 0).all() and (tensor[:, :, w:] == 0).all()


def test_collate_pads_to_largest_and_keeps_sizes():
    rng = np.random.default_rng(0)
    shapes = [(16, 32), (48, 16), (32, 32)]
    samples = [{"image": torch.randn(3, h, w), "points": torch.rand(k, 2) * 10,
                "targets": {"map": torch.rand(1, h // 8, w // 8)}, "meta": {"valid_size": (h - 3, w - 5)}}
               for (h, w), k in zip(shapes, rng.integers(0, 5, 3), strict=True)]
    batch = collate([samples[0], [samples[1], samples[2]]])  # a training item is a list of crops
    assert batch.images.shape == (3, 3, 48, 32) and batch.targets["map"].shape == (3, 1, 6, 4)
    assert batch.sizes.tolist() == [[13, 27], [45, 11], [29, 27]]
    for i, ((h, w), s) in enumerate(zip(shapes, samples, strict=True)):
        assert torch.equal(batch.images[i, :, :h, :w], s["image"])
        assert batch.images[i, :, h:].abs().sum() == 0 and batch.images[i, :, :, w:].abs().sum() == 0
        assert torch.equal(batch.targets["map"][i, :, :h // 8, :w // 8], s["targets"]["map"])
        assert torch.equal(batch.points[i], s["points"])
