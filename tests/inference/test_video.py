"""`zoo predict` on video: a short Motion-JPEG clip of synthetic crowd frames whose head counts are known, counted
by a model that reads each frame's count from digits painted into its corner, so every row can be checked exactly
(through the whole path: decoding, every-Nth selection, batching, padding, the CSV, the plot, the overlay video)."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from zoo.cli import main
from zoo.core.types import Prediction
from zoo.data.readers import load_image, read_records
from zoo.data.synthetic import generate
from zoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from zoo.models.base import CrowdModel
from zoo.models.registry import Recipe, is_registered, register_model

FPS = 10.0
DIGITS = 3  # base-16 digits, one 16x16 block each along the top-left edge; intensity 16 * digit + 8
BLOCK = 16


class PaintedCount(CrowdModel):
    """Counts the number painted into a frame by `paint_count`: it survives JPEG compression, being made of
    flat 16x16 blocks whose grey levels are 16 apart."""

    stride = 8

    def forward(self, images):
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = (images.float() * std + mean) * 255
        blocks = pixels[:, :, :BLOCK, : DIGITS * BLOCK].mean((1, 2)).unflatten(1, (DIGITS, BLOCK)).mean(-1)
        return {"digits": torch.div(blocks, 16, rounding_mode="floor")}

    def decode(self, outputs, sizes, threshold):
        weights = torch.tensor([16.0**k for k in reversed(range(DIGITS))])
        counts = (outputs["digits"] * weights).sum(1).round().int().tolist()
        return [Prediction(float(n), np.full((n, 2), 4.0), np.ones(n)) for n in counts]


if not is_registered("painted_count"):
    register_model("painted_count", family="points", description="test-only: reads a painted count",
                   recipe=Recipe(threshold=0.5))(lambda pretrained=False, **kw: PaintedCount())


def paint_count(image: np.ndarray, count: int) -> np.ndarray:
    painted = image.copy()
    for k in range(DIGITS):
        digit = count // 16 ** (DIGITS - 1 - k) % 16
        painted[:BLOCK, k * BLOCK:(k + 1) * BLOCK] = 16 * digit + 8
    return painted


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    """Six synthetic crowd frames (64x96) with their head counts painted in, as a 10 fps Motion-JPEG AVI."""
    root = tmp_path_factory.mktemp("video")
    crowds = generate(root / "crowds", seed=0, splits={"test": 6}, size=(64, 96))
    records = read_records(crowds, "test")
    counts = [len(r.points) for r in records]
    assert len(set(counts)) > 3 and max(counts) < 16**DIGITS
    path = root / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (96, 64))
    for record, count in zip(records, counts, strict=True):
        writer.write(cv2.cvtColor(paint_count(load_image(record.image), count), cv2.COLOR_RGB2BGR))
    writer.release()
    weights = root / "painted_count.pt"
    torch.save({"model": {}, "model_name": "painted_count"}, weights)
    return {"path": path, "counts": counts, "weights": weights}


# auto, the default, compiles a video's model (zoo.deploy.compiled): the slow run, compiling included
@pytest.mark.parametrize("compile_mode", ["off", pytest.param("auto", marks=pytest.mark.slow)])
def test_counts_every_frame_into_a_csv_and_a_plot(clip, tmp_path, capsys, compile_mode):
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(clip["weights"]), str(clip["path"]), "--out", str(out),
                 "--batch-size", "4", "--compile", compile_mode]) == 0
    table = pd.read_csv(out / "clip_counts.csv")
    assert list(table.columns) == ["frame", "time_s", "count", "n_points"]
    assert table["frame"].tolist() == list(range(6))
    np.testing.assert_allclose(table["time_s"], np.arange(6) / FPS)
    assert table["count"].tolist() == clip["counts"] and table["n_points"].tolist() == clip["counts"]
    plot = cv2.imread(str(out / "clip_counts.png"))
    assert plot is not None and plot.shape[0] > 100
    assert sorted(p.name for p in out.iterdir()) == ["clip_counts.csv", "clip_counts.png"]
    said = capsys.readouterr().out
    assert "clip.avi: 6 frame(s) counted" in said
    assert ("compiled the model for 4x3x64x96" in said) == (compile_mode == "auto")


def test_every_nth_frame_and_the_overlay_video(clip, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "painted_count", "--weights", str(clip["weights"]), str(clip["path"]), "--out",
                 str(out), "--every", "2", "--batch-size", "2", "--video-out", "--compile", "off"]) == 0
    table = pd.read_csv(out / "clip_counts.csv")
    assert table["frame"].tolist() == [0, 2, 4]
    np.testing.assert_allclose(table["time_s"], [0.0, 0.2, 0.4])
    assert table["count"].tolist() == clip["counts"][0::2]
    overlay = cv2.VideoCapture(str(out / "clip_overlay.avi"))
    frames = []
    while (read := overlay.read())[0]:
        frames.append(read[1])
    overlay.release()
    assert len(frames) == 3 and all(f.shape == (64, 96, 3) for f in frames)
    # The count's black box is drawn over the painted corner, whose second block is grey 16 * digit + 8 >= 24.
    assert clip["counts"][0] >= 16 and (frames[0][:3, BLOCK:BLOCK + 4] < 12).all()


@pytest.mark.parametrize("content", [b"not a video at all", None], ids=["garbage", "no-frames"])
def test_an_unreadable_or_empty_video_is_one_error_line_and_writes_nothing(clip, tmp_path, capsys, content):
    video = tmp_path / "bad.avi"
    if content is None:  # a valid container holding no frame
        cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (96, 64)).release()
    else:
        video.write_bytes(content)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(clip["weights"]), str(video), "--out", str(out), "--video-out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.avi" in err[0]
    assert not out.exists() or list(out.rglob("*")) == []
