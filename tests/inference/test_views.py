"""Test-time views: each image's count is the mean of its counts in flipped and turned copies of it.

The model counts the white pixels in the top-left quarter of an image's content, so its count changes with the
view. The expected counts come from moving the white pixels by hand (a quarter turn takes row r, column c of an
h x w image to row w - 1 - c, column r) and counting the ones that land in the top-left quarter; images whose sides
are not multiples of the stride catch a view taken of the padded image instead of its content.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.data.readers import Record
from zoo.inference.evaluate import VIEWS, check_views, evaluate, evaluate_thresholds, view_of
from zoo.models.base import CrowdModel

WHITE = 2.0  # ImageNet-normalized red of a white pixel is 2.25, of a black one -2.1


class TopLeftCounter(CrowdModel):
    """Counts the white pixels in the top-left quarter (rows < h // 2, columns < w // 2) of each content."""

    stride = 8

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return {"red": images[:, 0]}

    def decode(self, outputs, sizes, threshold):
        predictions = []
        for red, (height, width) in zip(outputs["red"], sizes.tolist(), strict=True):
            assert (red[height:] < WHITE).all() and (red[:, width:] < WHITE).all()  # nothing white on padding
            quarter = red[: height // 2, : width // 2] > threshold
            rows, cols = torch.nonzero(red[:height, :width] > threshold, as_tuple=True)
            points = torch.stack([cols + 0.5, rows + 0.5], 1).numpy()
            predictions.append(Prediction(float(quarter.sum()), points, np.ones(len(points))))
        return predictions


def moved(pixel: tuple[int, int], size: tuple[int, int], turns: int, flip: bool) -> tuple[tuple[int, int], tuple]:
    """Where `pixel` (row, column) of an image of `size` lands after `turns` quarter turns counter-clockwise and a
    left-right flip, and the new size."""
    (row, col), (height, width) = pixel, size
    for _ in range(turns):
        row, col, height, width = width - 1 - col, row, width, height
    if flip:
        col = width - 1 - col
    return (row, col), (height, width)


def expected_count(pixels, size, turns: int, flip: bool) -> int:
    count = 0
    for pixel in pixels:
        (row, col), (height, width) = moved(pixel, size, turns, flip)
        count += row < height // 2 and col < width // 2
    return count


# (height, width, white pixels as (row, column)): sides that are not multiples of 8, one in each quarter or so
IMAGES = [
    (21, 34, [(1, 2), (3, 30), (18, 5), (19, 33), (10, 16), (2, 3)]),
    (37, 13, [(0, 0), (36, 12), (5, 10), (30, 1), (17, 6)]),
]


@pytest.fixture
def records(tmp_path):
    found = []
    for k, (height, width, pixels) in enumerate(IMAGES):
        image = np.zeros((height, width, 3), np.uint8)
        for row, col in pixels:
            image[row, col] = 255
        path = tmp_path / f"image{k}.png"
        cv2.imwrite(str(path), image)
        points = np.array([(col + 0.5, row + 0.5) for row, col in pixels], np.float32)
        found.append(Record(image=path, points=points, source=path))
    return found


def test_a_view_turns_and_flips_the_content_and_pads_it_again():
    image = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3) + 1  # nothing 0 inside the content
    batch = torch.zeros(1, 2, 8, 8)
    batch[0, :, :5, :3] = image
    for turns, flip in VIEWS:
        views, sizes = view_of(batch, torch.tensor([[5, 3]]), turns, flip, stride=8)
        reference = np.rot90(image.numpy(), turns, axes=(1, 2))
        reference = reference[:, :, ::-1] if flip else reference
        h, w = reference.shape[1:]
        assert sizes.tolist() == [[h, w]] and views.shape == (1, 2, 8, 8)
        assert np.array_equal(views[0, :, :h, :w].numpy(), reference)
        assert views[0, :, h:].abs().sum() == 0 and views[0, :, :, w:].abs().sum() == 0


@pytest.mark.parametrize("views", [1, 2, 4, 8])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_the_count_is_the_mean_over_the_views(records, views, batch_size):
    evaluator = evaluate(TopLeftCounter(), records, "views", threshold=WHITE - 0.5, views=views,
                         batch_size=batch_size)
    for row, (height, width, pixels) in zip(evaluator.rows(), IMAGES, strict=True):
        counts = [expected_count(pixels, (height, width), *view) for view in VIEWS[:views]]
        assert row["pred_count"] == pytest.approx(np.mean(counts))
        assert row["n_pred"] == len(pixels)  # the points are those of the image as given
    assert len({expected_count(IMAGES[0][2], IMAGES[0][:2], *view) for view in VIEWS}) > 1  # views do differ


def test_views_decode_every_threshold(records):
    low, high = evaluate_thresholds(TopLeftCounter(), records, "views", thresholds=(WHITE - 0.5, 5.0), views=8)
    assert [r["pred_count"] for r in high.rows()] == [0.0, 0.0]
    assert [r["pred_count"] for r in low.rows()] != [0.0, 0.0]


def test_an_unknown_number_of_views_is_refused(records):
    with pytest.raises(ZooError, match="test views must be one of 1, 2, 4, 8, got 3"):
        evaluate(TopLeftCounter(), records, "views", threshold=1.0, views=3)


def test_views_are_refused_on_pose_data_where_a_mirror_swaps_left_and_right(records):
    person = Record(image=records[0].image, points=records[0].points, source=records[0].source,
                    box=np.array([0.0, 0.0, 10.0, 10.0]))
    check_views(1, [person])  # the person crops as given
    with pytest.raises(ZooError, match="test views are for counting data"):
        check_views(2, [person])
