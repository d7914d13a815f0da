"""Fixtures of the benchmarks' tests: a miniature VGG cells folder, and one torch thread."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the benchmarks/ scripts live beside zoo/


@pytest.fixture(scope="session")
def mini_cells(tmp_path_factory):
    """200 small images named like the VGG set, each with a few white dots and their red centres in a dots image."""
    folder = tmp_path_factory.mktemp("mini_cells")
    rng = np.random.default_rng(0)
    for k in range(1, 201):
        image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        dots = np.zeros_like(image)
        for x, y in rng.integers(2, 30, (int(rng.integers(1, 6)), 2)):
            cv2.circle(image, (int(x), int(y)), 2, (255, 255, 255), -1)
            dots[y, x] = (0, 0, 255)  # BGR red
        cv2.imwrite(str(folder / f"{k:03d}cell.png"), image)
        cv2.imwrite(str(folder / f"{k:03d}dots.png"), dots)
    return folder

