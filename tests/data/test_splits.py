"""Named splits: each split is exactly what the dataset calls it; an unsplit list is whatever the user uses it as."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.datasets import random_points, write_image

from zoo.core.errors import ZooError
from zoo.data.check import check_dataset
from zoo.data.dataset import VAL_FRACTION, resolve_splits
from zoo.data.readers import detect_format


def write_list(folder: Path, name: str, stems: list[str], counts: list[int], seed: int = 0) -> Path:
    """A P2PNet list `name` in `folder`: `images/<stem>.jpg labels/<stem>.txt` per line."""
    rng = np.random.default_rng(seed)
    lines = []
    for i, (stem, count) in enumerate(zip(stems, counts, strict=True)):
        write_image(folder / "images" / f"{stem}.jpg", seed=i)
        (folder / "labels").mkdir(exist_ok=True)
        (folder / "labels" / f"{stem}.txt").write_text("".join(f"{x} {y}\n" for x, y in random_points(rng, count)))
        lines.append(f"images/{stem}.jpg labels/{stem}.txt")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def names(records) -> list[str]:
    return [r.image.stem for r in records]


def test_published_p2pnet_layout_keeps_each_list_as_its_split(tmp_path):
    write_list(tmp_path, "train.list", [f"tr{i}" for i in range(10)], [2] * 10)
    write_list(tmp_path, "test.list", ["te0", "te1", "te2"], [1, 4, 0])
    assert detect_format(tmp_path) == "p2pnet"
    splits = resolve_splits(tmp_path, seed=3)
    assert names(splits.test) == ["te0", "te1", "te2"]  # the whole published test list, nothing else
    assert sorted(names(splits.train + splits.val)) == sorted(f"tr{i}" for i in range(10))
    assert len(splits.val) == round(10 * VAL_FRACTION) and not set(names(splits.train)) & set(names(splits.val))
    assert splits.select("test") == splits.test  # a split dataset answers --split as it names it
    report = check_dataset(tmp_path)
    assert report["splits"] == {"train": {"images": 10, "heads": 20}, "test": {"images": 3, "heads": 5}}


def test_val_list_is_used_and_val_fraction_is_then_refused(tmp_path):
    for name in ("train", "val", "test"):
        write_list(tmp_path, f"part_a_{name}.list", [f"{name}{i}" for i in range(3)], [1, 1, 1])
    splits = resolve_splits(tmp_path)
    assert [names(s) for s in (splits.train, splits.val, splits.test)] == [
        [f"{n}{i}" for i in range(3)] for n in ("train", "val", "test")]
    with pytest.raises(ZooError, match="has its own val split"):
        resolve_splits(tmp_path, val_fraction=0.1)


def test_a_single_list_is_whatever_split_the_user_says(tmp_path):
    listing = write_list(tmp_path, "x_all.txt", [f"s{i}" for i in range(8)], [1] * 8)
    splits = resolve_splits(listing, seed=1, val_fraction=0.25)
    assert names(splits.select("test")) == [f"s{i}" for i in range(8)]  # `zoo eval --data LIST` scores all
    assert not splits.test  # nothing is invented: training on it has no test split
    with pytest.raises(ZooError, match="has no test split"):
        splits.get("test")
    assert len(splits.val) == 2 and sorted(names(splits.train + splits.val)) == [f"s{i}" for i in range(8)]
    assert names(resolve_splits(listing, val_fraction=0).train) == [f"s{i}" for i in range(8)]
    with pytest.raises(ZooError, match="--val-fraction 1 must be in"):
        resolve_splits(listing, val_fraction=1)
    assert check_dataset(listing)["splits"] == {"unsplit": {"images": 8, "heads": 8}}


def write_json(folder: Path, splits: list[str | None]) -> Path:
    entries = []
    for i, split in enumerate(splits):
        write_image(folder / f"{i}.png", seed=i)
        entry = {"file": f"{i}.png", "points": [[1.5, 2.5]] * i}
        if split is not None:
            entry["split"] = split
        entries.append(entry)
    path = folder / "points.json"
    path.write_text(json.dumps({"images": entries}))
    return path


def test_json_split_field(tmp_path):
    labels = ["train", "test", "train", "val", "test", "train", "train"]
    splits = resolve_splits(write_json(tmp_path, labels))
    parts = {s: names(getattr(splits, s)) for s in ("train", "val", "test")}
    assert parts == {s: [str(i) for i, label in enumerate(labels) if label == s] for s in parts}
    everything = [n for part in parts.values() for n in part]
    assert sorted(everything) == sorted(map(str, range(len(labels)))) and len(set(everything)) == len(everything)
    report = check_dataset(tmp_path / "points.json")
    assert report["splits"]["test"] == {"images": 2, "heads": 1 + 4}


@pytest.mark.parametrize(("labels", "message"), [(["train", None], "some images but not all"),
                                                 (["train", "holdout"], "split 'holdout' is not one of")])
def test_json_split_field_errors(tmp_path, labels, message):
    with pytest.raises(ZooError, match=message):
        resolve_splits(write_json(tmp_path, labels))


def test_bad_list_lines_are_skipped_and_the_rest_used(tmp_path):
    listing = write_list(tmp_path, "train.list", ["a", "b", "c"], [1, 2, 3])
    (tmp_path / "images" / "b.jpg").unlink()
    (tmp_path / "labels" / "c.txt").unlink()
    report = check_dataset(tmp_path)
    assert report["problems"] == [f"{listing}:2: {tmp_path / 'images' / 'b.jpg'}: image not found",
                                  f"{listing}:3: {tmp_path / 'labels' / 'c.txt'}: annotation file missing"]
    splits = resolve_splits(tmp_path, val_fraction=0)
    assert names(splits.train) == ["a"] and len(splits.skipped) == 2
