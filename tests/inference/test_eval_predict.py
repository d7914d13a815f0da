"""`zoo eval` and `zoo predict` on a checkpoint trained for one step on a tiny synthetic dataset, and the overlay
drawing on hand-made predictions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from zoo.cli import main
from zoo.core.types import Prediction
from zoo.data.synthetic import generate
from zoo.inference.predict import render_overlay
from zoo.training.trainer import TrainConfig, train

# Of the registered models whose predictions carry a dense map (so the overlay's colour-map path runs on real
# outputs), the cheapest on a CPU: one step, eval and predict here took 23 s against cpn_r18's 77 s.
MODEL = "csrnet"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval_predict")
    data = generate(root / "data", seed=0, splits={"train": 4, "test": 2}, size=(64, 96))
    torch.manual_seed(0)
    # The trainer's defaults are kept (autocast as `auto` resolves it on this CPU): eval must find them in the
    # checkpoint.
    result = train(TrainConfig(model=MODEL, data=str(data), out=str(root / "run"), device="cpu",
                               recipe=dict(epochs=1, batch_size=2, crop_size=64)), console=Console(quiet=True))
    return {"root": root, "data": data, "checkpoint": Path(result["checkpoint"]), "run": root / "run"}


def test_eval_reproduces_the_trainers_final_test(trained, capsys):
    per_image = trained["root"] / "eval_per_image.csv"
    status = main(["eval", "--weights", str(trained["checkpoint"]), "--json", "--per-image", str(per_image)])
    assert status == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = json.loads((trained["run"] / "test_metrics.json").read_text())
    assert expected["images"] == 2
    assert reported == expected  # exactly, every key
    assert pd.read_csv(per_image).equals(pd.read_csv(trained["run"] / "test_predictions.csv"))


def test_eval_refuses_another_models_name(trained, capsys):
    assert main(["eval", "p2pnet", "--weights", str(trained["checkpoint"])]) == 2
    message = capsys.readouterr().err
    assert str(trained["checkpoint"].name) in message and MODEL in message


def test_predict_skips_an_unreadable_file_and_keeps_the_input_size(trained, tmp_path):
    folder = tmp_path / "images"
    test_images = trained["data"] / "test_data" / "images"
    shutil.copytree(test_images, folder)
    odd = cv2.imread(str(test_images / "IMG_1.jpg"))[:45, :70]  # 70 wide, 45 high: no side a multiple of 8
    cv2.imwrite(str(folder / "odd.png"), odd)
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "predict", MODEL, "--weights", str(trained["checkpoint"]),
                           str(folder), "--out", str(out), "--batch-size", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "broken.jpg" in line] == [
        f"skipped: {folder / 'broken.jpg'}: cannot decode image (corrupt or truncated?)"]

    summary = pd.read_csv(out / "summary.csv")
    assert sorted(Path(p).name for p in summary["image"]) == ["IMG_1.jpg", "IMG_2.jpg", "odd.png"]
    for row in summary.itertuples():
        stem = Path(row.image).stem
        height, width = cv2.imread(row.image).shape[:2]
        assert cv2.imread(str(out / f"{stem}_overlay.png")).shape == (height, width, 3)
        points = pd.read_csv(out / f"{stem}_points.csv")
        assert list(points.columns) == ["x", "y", "score"] and len(points) == row.n_points
        assert ((points.x >= 0) & (points.x <= width) & (points.y >= 0) & (points.y <= height)).all()

    # Padding and normalization match the evaluator's: the same counts as the trainer's test of these images, up to
    # float32 rounding (here batched with a smaller image, there alone: the kernels may sum in another order).
    tested = pd.read_csv(trained["run"] / "test_predictions.csv")
    counts = dict(zip(summary["image"].map(lambda p: Path(p).name), summary["count"], strict=True))
    assert {Path(n).name: c for n, c in zip(tested["name"], tested["pred_count"], strict=True)} == {
        name: pytest.approx(counts[name], rel=1e-5) for name in ("IMG_1.jpg", "IMG_2.jpg")}


def _hot_cell_prediction(map_is_density: bool) -> Prediction:
    """A 45x70 image's stride-4 map (12 x 18 cells, the last row and column partly padding) with one hot cell,
    and one point far from it."""
    dense = np.zeros((12, 18), np.float32)
    dense[5, 10] = 2.0  # pixels 20..23 (rows) x 40..43 (columns)
    return Prediction(count=1.0, points=np.array([[10.5, 38.5]]), scores=np.array([0.9]), dense_map=dense,
                      map_stride=4, map_is_density=map_is_density)


@pytest.mark.parametrize("map_is_density", [True, False])
def test_overlay_blends_the_map_where_it_is_high_and_draws_points_unless_density(map_is_density):
    image = np.full((45, 70, 3), 100, np.uint8)
    overlay = render_overlay(image, _hot_cell_prediction(map_is_density))
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert np.abs(overlay[21, 41].astype(int) - 100).max() > 50  # the hot cell is coloured in
    assert (overlay[30:45, 50:70] == 100).all()  # far from the cell and the point: the image, untouched
    assert (overlay[0, 0] == 0).all()  # the count's box in the top-left corner
    drawn = overlay[38, 10]  # the point's pixel: magenta for a heatmap's points, the bare image for a density
    assert (drawn == (255, 0, 255)).all() if not map_is_density else (drawn == 100).all()


def test_a_synthetic_only_model_says_so_once_on_other_data(trained, tmp_path, capsys):
    state = torch.load(trained["checkpoint"], weights_only=True)
    state["training"]["data"] = "synthetic"  # as `zoo train MODEL` records its default
    synthetic_only = tmp_path / "synthetic_only.pt"
    torch.save(state, synthetic_only)
    photo = trained["data"] / "test_data" / "images" / "IMG_1.jpg"
    inside_default = Path(os.environ["ZOO_DATA"]) / "synthetic" / "test_data" / "images"
    inside_default.mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, inside_default / "IMG_1.jpg")

    def warnings(*argv: str) -> list[str]:
        assert main(list(argv)) == 0
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]

    note = ["warning: this model was trained only on the synthetic crowds: counts on real photos are not "
            "meaningful; see README 'Using it on real photos'"]
    out = str(tmp_path / "out")
    assert warnings("predict", "--weights", str(synthetic_only), str(photo), "--out", out) == note
    assert warnings("eval", "--weights", str(synthetic_only), "--data", str(trained["data"])) == note
    assert warnings("predict", "--weights", str(synthetic_only), str(inside_default), "--out", out) == []
    assert warnings("predict", "--weights", str(trained["checkpoint"]), str(photo), "--out", out) == []


def test_eval_views_count_the_mean_of_the_image_and_its_mirror(trained, tmp_path, capsys):
    # The mirrored test images, as a dataset of their own: `--views 1` on them counts what view 2 of `--views 2`
    # must see (only the counts matter here, so the ground truth is copied as is).
    mirrored = tmp_path / "mirrored"
    shutil.copytree(trained["data"] / "test_data", mirrored / "test_data")
    for image in list((mirrored / "test_data" / "images").iterdir()):  # PNG: a JPEG would not be exact
        cv2.imwrite(str(image.with_suffix(".png")), cv2.flip(cv2.imread(str(image)), 1))
        image.unlink()
    counts = {}
    for views, data in (("1", trained["data"]), ("1", mirrored), ("2", trained["data"])):
        per_image = tmp_path / f"views{views}-{data.name}.csv"
        assert main(["eval", "--weights", str(trained["checkpoint"]), "--data", str(data), "--views", views,
                     "--per-image", str(per_image)]) == 0
        table = pd.read_csv(per_image)
        counts[views, data.name] = dict(zip(table["name"].map(lambda p: Path(p).stem), table["pred_count"],
                                            strict=True))
    capsys.readouterr()
    plain, mirror, both = counts["1", trained["data"].name], counts["1", "mirrored"], counts["2", trained["data"].name]
    assert set(plain) == set(mirror) == set(both) and len(both) == 2
    assert any(plain[name] != pytest.approx(mirror[name], rel=1e-3) for name in both)  # the mirror counts otherwise
    for name in both:
        assert both[name] == pytest.approx((plain[name] + mirror[name]) / 2, rel=1e-4), name
