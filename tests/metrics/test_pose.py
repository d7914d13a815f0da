"""Pose mode: the COCO reader, person crops, flip alignment, OKS evaluation, learning, and the COCO sample."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import assets_path, fit

from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.data.check import check_dataset
from zoo.data.coco import COCO_KEYPOINTS, mirror_permutation, read_coco
from zoo.data.collate import collate
from zoo.data.dataset import PointDataset, resolve_splits
from zoo.data.readers import Record
from zoo.data.transforms import Sample, hflip, person_crop, person_window, uncrop_points
from zoo.metrics.pose import PoseEvaluator
from zoo.models.families.cpn import CPN, unmirror

K = len(COCO_KEYPOINTS)


def write_coco(folder: Path, persons_per_image=(2, 1, 3), seed: int = 0, size=(120, 160)) -> Path:
    """A COCO keypoints file with random persons (a few keypoints unlabelled) and its images."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id, persons in enumerate(persons_per_image, 1):
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (*size, 3), np.uint8))
        images.append({"id": image_id, "file_name": name, "height": size[0], "width": size[1]})
        for _ in range(persons):
            x, y = rng.uniform(5, size[1] - 45), rng.uniform(5, size[0] - 85)
            w, h = rng.uniform(25, 40), rng.uniform(50, 80)
            keypoints = np.stack([rng.uniform(x, x + w, K), rng.uniform(y, y + h, K), rng.choice([0, 1, 2], K,
                                                                                                  p=[.2, .3, .5])], 1)
            keypoints[0, 2] = 2
            keypoints[keypoints[:, 2] == 0, :2] = 0
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "bbox": [x, y, w, h], "area": w * h, "keypoints": keypoints.ravel().tolist(),
                                "num_keypoints": int((keypoints[:, 2] > 0).sum())})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS), "skeleton": []}]}
    path = folder / "person_keypoints_val2017.json"
    path.write_text(json.dumps(doc))
    return path


def test_reader_yields_one_record_per_person_with_labelled_keypoints(tmp_path):
    path = write_coco(tmp_path)
    doc = json.loads(path.read_text())
    records = read_coco(tmp_path)
    assert len(records) == len(doc["annotations"]) and all(r.split == "val" for r in records)
    for record, entry in zip(records, doc["annotations"], strict=True):
        keypoints = np.array(entry["keypoints"]).reshape(K, 3)
        np.testing.assert_array_equal(record.labels, np.nonzero(keypoints[:, 2] > 0)[0])
        np.testing.assert_allclose(record.points, keypoints[keypoints[:, 2] > 0, :2], rtol=1e-6)
        np.testing.assert_allclose(record.box, entry["bbox"], rtol=1e-6)
    assert [COCO_KEYPOINTS[i] for i in mirror_permutation(list(COCO_KEYPOINTS))[[1, 5, 16, 0]]] == [
        "right_eye", "right_shoulder", "left_ankle", "nose"]


def test_bad_coco_input_is_one_line_each_and_the_rest_is_used(tmp_path):
    path = write_coco(tmp_path)
    doc = json.loads(path.read_text())
    doc["annotations"][1]["keypoints"] = [0] * (3 * K)  # a person with no labelled keypoint
    doc["annotations"][3]["image_id"] = 99  # an image the file does not list
    path.write_text(json.dumps(doc))
    report = check_dataset(tmp_path)
    assert report["problems"] == [f"{path}: annotations[1] (id 2): no labelled keypoint (all 17 have v = 0)",
                                  f"{path}: annotations[3] (id 4): image_id 99 is not in 'images'"]
    assert len(resolve_splits(tmp_path).val) == len(doc["annotations"]) - 2
    del doc["categories"][0]["keypoints"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ZooError, match=f"^{path}: no category with keypoints"):
        read_coco(path)


def test_person_crop_uses_the_extended_box_at_the_crop_aspect_and_maps_back():
    box = np.array([10.0, 20.0, 30.0, 100.0])
    # extended by 10% / 15% a side: 36 x 130, then widened to 256:192 -> 97.5 x 130, centred on the box
    left, top, w, h = person_window(box, 256, 192)
    assert (left, top, w, h) == pytest.approx((25 - 48.75, 70 - 65, 97.5, 130))
    image = np.zeros((200, 100, 3), np.uint8)
    image[69, 24] = 255  # pixel (24, 69): continuous centre (24.5, 69.5)
    points = np.array([[24.5, 69.5], [0.5, 199.5], [99.0, 3.0]], np.float32)
    crop = person_crop(Sample(image, points, np.arange(3)), box, 256, 192)
    scale = 192 / 97.5
    expected = (np.array([24.5, 69.5]) - [left, top]) * scale
    np.testing.assert_allclose(crop.points[0], expected, rtol=1e-5)
    assert list(crop.ids) == [0]  # the other two fall outside the window
    row, col = np.unravel_index(crop.image[..., 0].argmax(), crop.image.shape[:2])
    assert abs(col + 0.5 - expected[0]) <= 0.5 * scale and abs(row + 0.5 - expected[1]) <= 0.5 * scale
    np.testing.assert_allclose(uncrop_points(crop.points, crop.meta["crop_affine"]), points[:1], atol=1e-4)


def test_mirrored_heatmaps_come_back_onto_the_original_grid():
    """A keypoint seen in the mirror image (x -> W - x, left <-> right) must decode where the original is."""
    model = CPN(num_keypoints=K, backbone="resnet18")
    encode = model.target_encoder()
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(8, 184, K), rng.uniform(8, 248, K)], 1).astype(np.float32)
    labels = np.arange(K)
    original = encode(points, (256, 192), {"labels": labels, "point_ids": labels})["refine"]
    mirrored_sample = hflip(Sample(np.zeros((256, 192, 3), np.uint8), points, labels))
    mirrored = encode(mirrored_sample.points, (256, 192),
                      {"labels": mirror_permutation(list(COCO_KEYPOINTS))[labels], "point_ids": labels})["refine"]
    restored = unmirror(mirrored[None], model.mirror, 192)[0]
    # Linear resampling of sigma-1.4 Gaussians; column 0 has no mirror cell (it would be 47.75) and is extrapolated.
    assert (restored - original)[..., 1:].abs().max() < 0.08
    flat = original.flatten(1).argmax(1)
    assert torch.equal(restored.flatten(1).argmax(1), flat)
    naive = mirrored.flip(-1)[model.mirror]  # without the 0.75-cell shift, peaks sit a cell off
    assert not torch.equal(naive.flatten(1).argmax(1), flat)


def predictions_of(records: list[Record], jitter: float, seed: int = 0) -> PoseEvaluator:
    rng = np.random.default_rng(seed)
    evaluator = PoseEvaluator(records)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    for index, record in enumerate(records):
        keypoints = np.array(record.annotation["keypoints"]).reshape(K, 3)[:, :2]
        points = keypoints + rng.normal(0, jitter, keypoints.shape) if jitter else keypoints
        evaluator.add(Prediction(count=K, points=points, scores=np.ones(K)), meta={"index": index,
                                                                                  "crop_affine": identity})
    return evaluator


def test_oks_of_the_truth_is_ap_1_and_falls_as_keypoints_are_jittered(tmp_path):
    write_coco(tmp_path, persons_per_image=(3, 2, 4, 1))
    records = read_coco(tmp_path)
    perfect = predictions_of(records, 0).summary()
    assert perfect == {"images": 10, "ap": 1.0, "ap50": 1.0, "ap75": 1.0, "ar": 1.0}
    aps = [predictions_of(records, jitter).summary()["ap"] for jitter in (1, 3, 8)]
    assert 1.0 > aps[0] > aps[1] > aps[2]


# ---------------------------------------------------------------- learning


def keypoint_samples(n: int, encoder, seed: int, shape=(64, 48)) -> list[dict]:
    """Person crops of noise with K = 3 coloured discs (red, green, blue): keypoint k is disc k."""
    rng = np.random.default_rng(seed)
    h, w = shape
    samples = []
    for i in range(n):
        image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        points = np.stack([rng.uniform(6, w - 6, 3), rng.uniform(6, h - 6, 3)], 1).astype(np.float32)
        for k, (x, y) in enumerate(points):
            colour = [0, 0, 0]
            colour[k] = 255
            cv2.circle(image, (int(x), int(y)), 3, colour, -1)
        sample = Sample(image, points, np.arange(3), meta={"path": f"p{i}", "labels": np.arange(3)})
        samples.append(PointDataset([], "kp", stride=32, encoder=encoder)._finish(sample))
    return samples


@pytest.mark.slow  # 60 steps: about a minute on an idle 2-core CPU
def test_learns_keypoints_better_than_the_mean_pose():
    torch.manual_seed(0)
    model = CPN(num_keypoints=3, backbone="resnet18")
    encoder = model.target_encoder()
    train = [collate(keypoint_samples(64, encoder, seed=1)[i:i + 8]) for i in range(0, 64, 8)]
    test = collate(keypoint_samples(16, encoder, seed=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(model, train, optimizer, 60)
    model.eval()
    mean_pose = torch.stack([p for b in train for p in b.points]).mean(0).numpy()
    predictions = model.predict(test.images, test.sizes, 0.0)
    errors = [np.linalg.norm(p.points - t.numpy(), axis=1).mean() for p, t in zip(predictions, test.points,
                                                                                   strict=True)]
    baseline = [np.linalg.norm(mean_pose - t.numpy(), axis=1).mean() for t in test.points]
    assert np.mean(errors) < 0.5 * np.mean(baseline)


# ---------------------------------------------------------------- the COCO sample


@pytest.mark.slow  # one step of 12 crops at 256x192, then 24 forward passes (flip test)
def test_coco_sample_trains_a_step_and_evaluates(tmp_path):
    from zoo.inference.predict import evaluate_checkpoint, load_inference
    from zoo.training.trainer import TrainConfig, train

    data = assets_path("coco_keypoints_sample")
    report = check_dataset(data)
    assert (report["images"], len(report["problems"])) == (14, 2)  # 2 persons have no labelled keypoint
    cfg = TrainConfig(model="cpn_r18", data=str(data), out=str(tmp_path), amp="off", val_fraction=0,
                      recipe={"epochs": 1, "batch_size": 12})
    result = train(cfg)
    summary = evaluate_checkpoint(load_inference(result["checkpoint"]), str(data)).summary()
    assert set(summary) == {"images", "ap", "ap50", "ap75", "ar"} and summary["images"] == 12
    assert all(0 <= summary[k] <= 1 for k in ("ap", "ap50", "ap75", "ar"))
