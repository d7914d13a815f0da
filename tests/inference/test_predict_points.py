"""`zoo predict`'s files from a model that finds points: white pixels on black images, at known places.

The model needs no training, so every point it reports is known in advance: the points CSVs must hold them
as x (column) and y (row), in input pixels, and the summary their counts, whatever the padding and batching.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from zoo.core.types import Prediction
from zoo.inference.predict import Inference, predict_to_folder
from zoo.models.base import CrowdModel


class WhitePixelFinder(CrowdModel):
    """Finds the white pixels of an image: one point at the centre of each, scored by its brightness."""

    stride = 8

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # a module with no parameters has no device

    def forward(self, images):
        return {"brightness": images[:, 0]}  # ImageNet-normalized red: white is 2.25, black -2.1

    def decode(self, outputs, sizes, threshold):
        predictions = []
        for brightness, (height, width) in zip(outputs["brightness"], sizes.tolist(), strict=True):
            rows, cols = torch.nonzero(brightness[:height, :width] > threshold, as_tuple=True)
            points = torch.stack([cols + 0.5, rows + 0.5], 1).numpy() if len(rows) else np.zeros((0, 2))
            predictions.append(Prediction(float(len(rows)), points, brightness[rows, cols].numpy()))
        return predictions


# name: (height, width, white pixels as (row, column)); sizes not multiples of the stride, rows != columns
IMAGES = {
    "wide.png": (40, 64, [(5, 30), (33, 7), (20, 50)]),
    "odd.png": (45, 70, [(44, 69), (0, 0), (12, 3), (3, 12)]),
    "empty.png": (45, 70, []),
    "tall.png": (71, 30, [(70, 1), (60, 25)]),
}


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, (height, width, pixels) in IMAGES.items():
        image = np.zeros((height, width, 3), np.uint8)
        for row, col in pixels:
            image[row, col] = 255
        cv2.imwrite(str(images / name), image)
    return images


@pytest.mark.parametrize("batch_size", [1, 3])
def test_points_csv_holds_x_then_y_and_the_summary_the_counts(folder, tmp_path, batch_size):
    run = Inference(WhitePixelFinder().eval(), {}, torch.device("cpu"), threshold=1.0, amp="off",
                    channels_last=False)
    out = tmp_path / "out"
    outcomes = predict_to_folder(run, [folder], out, batch_size=batch_size)
    assert all(o.error is None for o in outcomes)

    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["image"].map(lambda p: p.rsplit("/", 1)[-1])) == sorted(IMAGES)
    for row in summary.itertuples():
        name = row.image.rsplit("/", 1)[-1]
        height, width, pixels = IMAGES[name]
        assert row.count == len(pixels) and row.n_points == len(pixels), name
        table = pd.read_csv(out / f"{name[:-4]}_points.csv")
        assert list(table.columns) == ["x", "y", "score"]
        found = sorted(zip(table.x, table.y, strict=True))
        assert found == sorted((col + 0.5, row_ + 0.5) for row_, col in pixels), name
        assert (table.score > 2).all()
