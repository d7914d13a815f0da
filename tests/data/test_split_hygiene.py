"""Split hygiene: train / val / test are pairwise disjoint by image, together they are the whole input, their sizes
are the documented ones, and test is exactly what the dataset itself calls test. Checkpoints are chosen on
validation, so a validation split that overlaps the test split would make every reported test number optimistic.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support import assets_path, write_mat

from zoo.data.dataset import VAL_FRACTION, resolve_splits
from zoo.data.readers import read_records


def write_tiny_shanghaitech(root: Path, sizes: dict[str, int]) -> Path:
    """Tiny 16x16 images named IMG_1.png ... per split, one head each (the splits are what is tested here)."""
    for split, n in sizes.items():
        for k in range(1, n + 1):
            image = root / f"{split}_data" / "images" / f"IMG_{k}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), np.full((16, 16, 3), k, np.uint8))
            write_mat(root / f"{split}_data" / "ground-truth" / f"GT_IMG_{k}.mat", np.array([[8.0, 8.0]]))
    return root


def write_tiny_cells(folder: Path, n: int) -> Path:
    """`n` 8x8 NNNcell.png images, each with one red dot in its NNNdots.png."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, n + 1):
        cv2.imwrite(str(folder / f"{k:03d}cell.png"), np.full((8, 8, 3), k % 256, np.uint8))
        dots = np.zeros((8, 8, 3), np.uint8)
        dots[k % 8, 3] = (0, 0, 255)  # BGR: pure red
        cv2.imwrite(str(folder / f"{k:03d}dots.png"), dots)
    return folder


def names(records) -> list[str]:
    return [str(r.image.resolve()) for r in records]


def assert_partition(splits, every_image: list[str]) -> None:
    # the attributes, not `get`: a split the dataset lacks is empty here (and `get` refuses it)
    train, val, test = (set(names(getattr(splits, s))) for s in ("train", "val", "test"))
    for split in ("train", "val", "test"):
        listed = names(getattr(splits, split))
        assert len(listed) == len(set(listed)), f"{split} lists an image twice"
    assert not train & val, "train and val share images"
    assert not train & test, "train and test share images"
    assert not val & test, "val and test share images"
    assert sorted(train | val | test) == sorted(every_image)


@pytest.mark.parametrize("seed", [0, 3])
def test_shanghaitech_without_val_data_holds_out_a_fifth_of_train(tmp_path, seed):
    root = write_tiny_shanghaitech(tmp_path / "sh", {"train": 11, "test": 4})
    splits = resolve_splits(root, seed=seed)
    assert_partition(splits, names(read_records(root)))
    assert names(splits.test) == names(read_records(root, "test"))
    assert len(splits.val) == round(11 * VAL_FRACTION) == 2 and len(splits.train) == 9
    assert set(names(splits.val)) <= set(names(read_records(root, "train")))


def test_shanghaitech_hold_out_depends_on_the_seed_only(tmp_path):
    root = write_tiny_shanghaitech(tmp_path / "sh", {"train": 20, "test": 2})
    held = {seed: names(resolve_splits(root, seed=seed).val) for seed in range(4)}
    assert held[0] == names(resolve_splits(root, seed=0).val)
    assert len({tuple(v) for v in held.values()}) > 1, "every seed holds out the same images"


def test_shanghaitech_with_val_data_uses_it_as_is(tmp_path):
    root = write_tiny_shanghaitech(tmp_path / "sh", {"train": 6, "val": 3, "test": 4})
    splits = resolve_splits(root)
    assert_partition(splits, names(read_records(root)))
    for split in ("train", "val", "test"):
        assert names(splits.get(split)) == names(read_records(root, split))


def test_shanghaitech_without_test_data_has_an_empty_test_split(tmp_path):
    root = write_tiny_shanghaitech(tmp_path / "sh", {"train": 5})
    splits = resolve_splits(root)
    assert splits.test == []
    assert_partition(splits, names(read_records(root)))


def check_cells_splits(folder: Path) -> None:
    splits = resolve_splits(folder, fmt="cells")
    assert_partition(splits, names(read_records(folder, fmt="cells")))
    numbers = {s: [int(r.image.name[:3]) for r in splits.get(s)] for s in ("train", "val", "test")}
    assert numbers == {"train": list(range(1, 81)), "val": list(range(81, 101)), "test": list(range(101, 201))}


def test_cells_splits_are_images_1_to_80_81_to_100_and_101_to_200(tmp_path):
    check_cells_splits(write_tiny_cells(tmp_path / "cells", 200))


def test_vgg_cells_splits():
    check_cells_splits(assets_path("cells_vgg", "cells"))
