"""COCO keypoints: one `Record` per annotated person, so pose data flows through the same data layer as crowds.

A pose sample is a person crop whose points are that person's labelled keypoints: `points` holds the (x, y) of
every keypoint with visibility v > 0 (v = 1 labelled but occluded, v = 2 visible), `labels` its type 0..K-1
(unlabelled ones, v = 0, are absent), `box` the person box (x, y, w, h) the dataset crops around (see
`transforms.person_crop`), `mirror_labels` the keypoint type each type becomes in a mirrored image, and
`annotation` the COCO entry (with its image's size) that OKS evaluation scores against.

Layout: a folder holding `person_keypoints_<split>2017.json` files (split from the name: train, val, test) or one
such JSON file (any name, e.g. mmpose's `test_coco.json`: unsplit). Images are looked up beside the JSON, in
`images/`, and in `<split>2017/`. Keypoints are COCO's pixel coordinates, taken as the zoo's continuous ones and
written back unchanged, so OKS compares like with like.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from zoo.core.errors import ZooError
from zoo.data.records import SPLITS, Record

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")


def mirror_permutation(names: list[str]) -> np.ndarray:
    """Type index each keypoint type becomes under a horizontal flip: left_x <-> right_x, others unchanged."""
    index = {name: i for i, name in enumerate(names)}
    swapped = {"left": "right", "right": "left"}
    return np.array([index.get(re.sub(r"^(left|right)", lambda m: swapped[m.group()], n), i)
                     for i, n in enumerate(names)], np.int64)


def coco_files(path: Path) -> list[Path]:
    """The keypoint JSON files of a COCO folder, or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(path.glob("person_keypoints_*.json")) or sorted(p for p in path.glob("*.json") if has_keypoints(p))


def has_keypoints(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b'"keypoints"' in f.read(1 << 20)
    except OSError:
        return False


def _file_split(path: Path) -> str | None:
    match = re.search(r"(train|val|test)(\d{4})?$", path.stem)
    return match.group(1) if match and match.group(1) in SPLITS and path.stem.startswith("person_keypoints") else None


def read_coco(path: Path) -> list[Record]:
    files = coco_files(path)
    if not files:
        raise ZooError(f"{path}: no COCO keypoint JSON (person_keypoints_*.json) found")
    return [record for file in files for record in read_coco_file(file)]


def read_coco_file(path: Path) -> list[Record]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        images = {image["id"]: image for image in doc["images"]}
        annotations, categories = doc["annotations"], doc["categories"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ZooError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    person = next((c for c in categories if c.get("keypoints")), None)
    if person is None:
        raise ZooError(f"{path}: no category with keypoints: a COCO detection file, not a keypoints file")
    names = list(person["keypoints"])
    mirror = mirror_permutation(names)
    split = _file_split(path)
    records = []
    for i, entry in enumerate(annotations):
        if entry.get("category_id") != person["id"] or entry.get("iscrowd", 0):
            continue  # crowd regions have no keypoints; OKS evaluation ignores them
        where = f"{path}: annotations[{i}] (id {entry.get('id')})"
        image = images.get(entry.get("image_id"))
        file = _image_file(path, image, split) if image else None
        record = Record(file or path, np.zeros((0, 2), np.float32), path, split=split,
                        mirror_labels=mirror, annotation=None)
        try:
            keypoints = np.asarray(entry["keypoints"], np.float64).reshape(len(names), 3)
            box = np.asarray(entry["bbox"], np.float64).reshape(4)
        except (KeyError, ValueError, TypeError):
            record.problems.append(f"{where}: needs 'keypoints' ({len(names)} x (x, y, v)) and 'bbox' (x, y, w, h)")
            records.append(record)
            continue
        labelled = keypoints[:, 2] > 0
        if image is None:
            record.problems.append(f"{where}: image_id {entry.get('image_id')} is not in 'images'")
        elif file is None:
            record.problems.append(f"{where}: image {image.get('file_name')} not found")
        if not labelled.any():
            record.problems.append(f"{where}: no labelled keypoint (all {len(names)} have v = 0)")
        if box[2] <= 0 or box[3] <= 0:
            record.problems.append(f"{where}: empty person box {box.tolist()}")
        record.points = keypoints[labelled, :2].astype(np.float32)
        record.labels = np.nonzero(labelled)[0].astype(np.int64)
        record.box = box.astype(np.float32)
        record.annotation = {"id": entry.get("id", i), "image_id": entry.get("image_id"), "bbox": box.tolist(),
                             "area": float(entry.get("area", box[2] * box[3])), "keypoints": keypoints.ravel().tolist(),
                             "num_keypoints": int(labelled.sum()),
                             "height": image.get("height") if image else None,
                             "width": image.get("width") if image else None}
        records.append(record)
    return records


def _image_file(json_file: Path, image: dict, split: str | None) -> Path | None:
    name = image.get("file_name", "")
    folders = [json_file.parent, json_file.parent / "images", json_file.parent.parent / "images"]
    folders += [json_file.parent / f"{split}2017", json_file.parent.parent / f"{split}2017"] if split else []
    return next((folder / name for folder in folders if (folder / name).is_file()), None)
