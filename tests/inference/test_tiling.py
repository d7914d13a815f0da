"""Tiled inference (zoo.inference.tiling): tiles merged into the whole image's prediction.

The real families run seeded (so they find many points) on a synthetic crowd small enough for one forward pass,
cut into 2 x 2 tiles by the smallest tile their receptive context allows; their tiled counts must be within 1% of
the whole image's and the two point sets must match at F1@4 >= 0.99. Test-only models pin the seams down exactly
(a point on a core boundary is kept once) and drive `zoo predict --tile` end to end.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from support.seeded import seeded_csrnet, seeded_p2pnet, threshold_in_widest_gap
from support.tiny_family import TinyDensity

from zoo.bench.measure import scene
from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.data import transforms as T
from zoo.deploy.fold import prepare_for_inference
from zoo.inference.predict import Inference, predict_one
from zoo.inference.tiling import Tiling, predict_tiled, resolve_tiling, spans
from zoo.metrics.counting import match_points
from zoo.models.base import CrowdModel
from zoo.models.factory import create_model
from zoo.models.registry import Recipe, is_registered, register_model


def inference(model: CrowdModel, threshold: float) -> Inference:
    return Inference(model, {}, torch.device("cpu"), threshold=threshold, amp="off", channels_last=False)


def f1(found: np.ndarray, truth: np.ndarray, radius: float) -> float:
    return 2 * match_points(found, truth, radius) / (len(found) + len(truth))


# ---- the real families ---------------------------------------------------------------------------------------

FAMILIES = {
    "p2pnet": seeded_p2pnet,
    "csrnet": seeded_csrnet,
    "cpn_r18": pytest.param(lambda: create_model("cpn_r18"), marks=pytest.mark.slow),  # 736 px tiles: ~10 s
}


@pytest.mark.parametrize("build", FAMILIES.values(), ids=FAMILIES.keys())
def test_tiled_counts_and_points_are_the_whole_images(build):
    torch.manual_seed(0)
    model = prepare_for_inference(build().eval())
    tile = 2 * model.receptive_context + model.stride  # the smallest valid tile: the most seams per pixel
    side = 2 * (tile - model.receptive_context)  # two tiles along each side
    image = T.resize(scene("test", 0), side, side).image
    scores = np.sort(predict_one(inference(model, -1e9), image).scores)
    threshold = threshold_in_widest_gap(scores[: len(scores) * 3 // 4])  # a gap below the top quarter of the points
    run = inference(model, threshold)
    whole = predict_one(run, image)
    tiled = predict_tiled(image, lambda window: predict_one(run, window), resolve_tiling(model, tile, None, 0))

    assert len(spans(side, tile, model.receptive_context)) == 2
    seam = side // 2
    assert len(whole.points) > 50 and (np.abs(whole.points - seam) < 8).any()  # points crowd the seams
    assert abs(tiled.count - whole.count) <= 0.01 * whole.count
    assert f1(tiled.points, whole.points, 4.0) >= 0.99
    assert len(tiled.points) == len(whole.points) and len(tiled.scores) == len(tiled.points)
    assert (tiled.map_stride, tiled.map_is_density) == (whole.map_stride, whole.map_is_density)
    if whole.dense_map is not None:  # assembled from the cores cell for cell
        np.testing.assert_allclose(tiled.dense_map, whole.dense_map, rtol=1e-4, atol=1e-5 * whole.dense_map.max())


def receptive_reach(model: CrowdModel, output: str, cells: int, side: int) -> int:
    """How far beyond a stride-aligned block at the centre of a `side` x `side` input an input pixel changes the
    block's outputs: the farthest pixel with a nonzero gradient. `output` (B, cells * C, h, w) after a reshape."""
    image = torch.randn(1, 3, side, side, requires_grad=True)
    maps = model(image)[output]
    grid = maps.reshape(1, -1, side // cells, side // cells)
    start = side // 2 // model.stride * model.stride
    block = slice(start // cells, (start + model.stride) // cells)
    grid[..., block, block].sum().backward()
    rows, cols = torch.nonzero(image.grad.abs().sum((0, 1)), as_tuple=True)
    return max(start - int(rows.min()), int(rows.max()) + 1 - start - model.stride,
               start - int(cols.min()), int(cols.max()) + 1 - start - model.stride)


@pytest.mark.parametrize("name, options, output, cell, side", [
    ("p2pnet", dict(backbone="vgg16", width=16), "logits", 8, 288),
    ("csrnet", dict(dilation="A"), "density", 8, 224),
    ("csrnet", dict(dilation="B"), "density", 8, 320),
    ("tiny_density_tiled", {}, "density", 4, 32),
])
def test_the_receptive_context_covers_the_receptive_field_and_one_cell(name, options, output, cell, side):
    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    reach = receptive_reach(model, output, cell, side)
    assert reach + cell <= model.receptive_context < reach + cell + model.stride


# ---- seams, exactly ------------------------------------------------------------------------------------------

class PixelCorners(CrowdModel):
    """One point per white pixel, at its top-left corner plus `shift` (1: its bottom-right corner)."""

    stride = 4
    receptive_context = 4  # a point depends on its own pixel only: one cell

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def forward(self, images):
        return {"white": images[:, 0] > 2}  # ImageNet-normalized red: white is 2.25, black -2.1

    def decode(self, outputs, sizes, threshold):
        predictions = []
        for white, (height, width) in zip(outputs["white"], sizes.tolist(), strict=True):
            rows, cols = torch.nonzero(white[:height, :width], as_tuple=True)
            points = torch.stack([cols, rows], 1).float().numpy() + self.shift
            predictions.append(Prediction(float(len(points)), points, np.ones(len(points), np.float32)))
        return predictions


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_a_point_on_a_core_boundary_or_the_far_border_is_kept_once(shift):
    height, width, tile, overlap = 40, 52, 20, 4
    row_starts = [start for start, *_ in spans(height, tile, overlap)]
    col_starts = [start for start, *_ in spans(width, tile, overlap)]
    assert len(row_starts) >= 3 and len(col_starts) >= 4
    image = np.zeros((height, width, 3), np.uint8)
    for row in [*row_starts, height - 1]:  # a white pixel at every crossing of core boundaries and last pixels
        for col in [*col_starts, width - 1]:
            image[row, col] = 255
    run = inference(PixelCorners(shift).eval(), 0.5)
    whole = predict_one(run, image)
    tiled = predict_tiled(image, lambda window: predict_one(run, window), Tiling(tile, overlap))
    assert tiled.count == whole.count == len(whole.points) == (len(row_starts) + 1) * (len(col_starts) + 1)
    assert sorted(map(tuple, tiled.points)) == sorted(map(tuple, whole.points))


def test_the_windows_are_aligned_at_most_a_tile_and_the_cores_partition_the_side():
    for length in (1, 19, 20, 21, 52, 100, 333):
        found = spans(length, 20, 4)
        cores = [(start, end) for start, end, *_ in found]
        assert cores[0][0] == 0 and cores[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(cores, cores[1:], strict=False))
        for start, end, window_start, window_end in found:
            assert window_start % 4 == 0 and window_end - window_start <= 20
            assert window_start == max(start - 4, 0) and window_end == min(end + 4, length)


# ---- the command line ----------------------------------------------------------------------------------------

class ContextTinyDensity(TinyDensity):
    receptive_context = 8  # its three 3x3 convolutions reach 4 px before a 4 px cell (1 px after it); + one cell


if not is_registered("tiny_density_tiled"):
    register_model("tiny_density_tiled", family="density", description="test-only: tiny density with a context",
                   recipe=Recipe(threshold=0.0))(lambda pretrained=False, **kw: ContextTinyDensity(**kw))


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save({"model": ContextTinyDensity().state_dict(), "model_name": "tiny_density_tiled"}, path)
    return path


@pytest.mark.parametrize("flags", [["--tile", "28"], ["--max-pixels", str(28 * 28)]])
def test_predict_writes_the_untiled_files_when_tiling(weights, tmp_path, monkeypatch, flags):
    image = tmp_path / "crowd.png"
    cv2.imwrite(str(image), np.ascontiguousarray(T.resize(scene("test", 0), 92, 132).image[..., ::-1]))
    assert main(["predict", "--weights", str(weights), str(image), "--out", str(tmp_path / "whole")]) == 0
    tiled_images = []
    monkeypatch.setattr("zoo.inference.predict.predict_tiled", lambda image, *a: tiled_images.append(image) or
                        predict_tiled(image, *a))
    assert main(["predict", "--weights", str(weights), str(image), "--out", str(tmp_path / "tiled"), *flags]) == 0
    assert len(tiled_images) == 1

    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    assert sorted(p.name for p in tiled.iterdir()) == sorted(p.name for p in whole.iterdir())
    expected, found = pd.read_csv(whole / "summary.csv"), pd.read_csv(tiled / "summary.csv")
    assert found["n_points"].tolist() == expected["n_points"].tolist() and expected["n_points"][0] > 10
    np.testing.assert_allclose(found["count"], expected["count"], rtol=1e-5, atol=1e-4)
    points = [pd.read_csv(folder / "crowd_points.csv").sort_values(["x", "y"]).to_numpy() for folder in (whole, tiled)]
    np.testing.assert_allclose(*points, atol=2e-4)  # x, y equal; a score may round the other way in its 4th decimal
    overlays = [cv2.imread(str(folder / "crowd_overlay.png")).astype(int) for folder in (whole, tiled)]
    assert np.abs(overlays[0] - overlays[1]).max() <= 1


@pytest.mark.parametrize("flags, nearest", [
    (["--tile", "29"], "--tile 28"),  # not a multiple of the stride 4
    (["--tile", "12"], "--tile 20"),  # below 2 x the context 8 + the stride
    (["--overlap", "4"], "--overlap 8"),  # below the context
    (["--overlap", "11", "--tile", "64"], "--overlap 12"),  # not a multiple of the stride
    (["--max-pixels", "100"], "--max-pixels 400"),  # its 8 px tiles are below 20
])
def test_a_bad_tile_or_overlap_is_one_line_naming_the_nearest_valid_value(weights, tmp_path, capsys, flags, nearest):
    image = tmp_path / "crowd.png"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    assert main(["predict", "--weights", str(weights), str(image), "--out", str(tmp_path / "out"), *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and error[0].endswith(f"nearest valid: {nearest}")
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_receptive_context_is_never_tiled():
    assert resolve_tiling(TinyDensity(), None, None, 100) is None
    with pytest.raises(ZooError, match="receptive_context"):
        resolve_tiling(TinyDensity(), 64, None, 0)
