"""Zones (`zoo predict --zones FILE`): the one boundary rule, tiling zones adding up to the frame's count for points
and for density maps (directly and in the CSV and JSON lines rows), overlays, and malformed zone files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from support import ROOT, tiny_family  # noqa: F401  (registers tiny_density)

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.inference.predict import count_box, render_overlay
from zoo.inference.zones import ZONE_COLOURS, Zone, ZoneCounter, assign, load_zones
from zoo.models.registry import build_model
from zoo.models.weights.checkpoint import Checkpoint

HEIGHT, WIDTH = 45, 70  # no side a multiple of the map's stride


def quadrants(x: float, y: float, width: float = WIDTH, height: float = HEIGHT) -> list[dict]:
    """Four zones tiling the frame, meeting at (x, y)."""
    return [{"name": "top left", "polygon": [[0, 0], [x, 0], [x, y], [0, y]]},
            {"name": "top right", "polygon": [[x, 0], [width, 0], [width, y], [x, y]]},
            {"name": "bottom", "polygon": [[0, y], [width, y], [width, height], [0, height]]}]


def zones_of(entries: list[dict]) -> list[Zone]:
    return [Zone(e["name"], np.asarray(e["polygon"], np.float64)) for e in entries]


def test_each_point_belongs_to_the_first_zone_containing_it():
    zones = zones_of(quadrants(30, 20))
    points = np.array([[30, 20], [30, 5], [10, 20], [0, 0], [WIDTH, HEIGHT], [50, 30], [80, 10], [-1, 5]])
    assert assign(zones, points).tolist() == [0, 0, 0, 0, 2, 2, -1, -1]


def test_a_non_convex_zone():
    u_shape = zones_of([{"name": "u", "polygon": [[0, 0], [10, 0], [10, 10], [7, 10], [7, 3], [3, 3], [3, 10],
                                                  [0, 10]]}])
    assert assign(u_shape, [[1, 9], [5, 5], [5, 3], [8, 9], [5, 1]]).tolist() == [0, -1, 0, 0, 0]


@pytest.mark.parametrize("corner", [(30, 20), (22, 18), (30.7, 11.3)], ids=["on-cells", "on-centres", "anywhere"])
def test_tiling_zones_add_up_to_the_frame_count_for_points_and_densities(corner):
    rng = np.random.default_rng(0)
    counter = ZoneCounter(zones_of(quadrants(*corner)))
    # stride-4 map of a 45 x 70 image: 12 x 18 cells, the last row and column partly padding
    dense = rng.random((12, 18)).astype(np.float32)
    density = Prediction(float(dense.sum()), np.zeros((0, 2)), np.zeros(0), dense, 4, True)
    # points on the zones' shared edges and corner, on the frame's edge, and anywhere
    points = np.vstack([[corner, (corner[0], 3), (5, corner[1]), (WIDTH, HEIGHT), (0, 0)],
                        rng.uniform((0, 0), (WIDTH, HEIGHT), (40, 2))])
    found = Prediction(float(len(points)), points, np.ones(len(points)))
    for prediction in (density, found):
        counts = counter.counts(prediction, (HEIGHT, WIDTH))
        assert all(v > 0 for v in counts.values())
        assert sum(counts.values()) == pytest.approx(prediction.count, rel=1e-6)


def test_a_density_is_split_at_its_cells():
    dense = np.zeros((12, 18), np.float32)
    dense[5, 10] = 2.0  # the cell of pixels x 40..43, y 20..23: centre (42, 22)
    counter = ZoneCounter(zones_of(quadrants(42, 22)))  # the corner on the cell's centre: the first zone takes it
    counts = counter.counts(Prediction(2.0, np.zeros((0, 2)), np.zeros(0), dense, 4, True), (HEIGHT, WIDTH))
    assert counts == {"top left": 2.0, "top right": 0.0, "bottom": 0.0}
    counter = ZoneCounter(zones_of(quadrants(41.9, 22)))
    counts = counter.counts(Prediction(2.0, np.zeros((0, 2)), np.zeros(0), dense, 4, True), (HEIGHT, WIDTH))
    assert counts == {"top left": 0.0, "top right": 2.0, "bottom": 0.0}


def test_a_heatmap_that_is_not_a_density_counts_its_points():
    heat = np.ones((12, 18), np.float32)
    prediction = Prediction(1.0, np.array([[60.0, 40.0]]), np.ones(1), heat, 4, False)
    counts = ZoneCounter(zones_of(quadrants(30, 20))).counts(prediction, (HEIGHT, WIDTH))
    assert counts == {"top left": 0.0, "top right": 0.0, "bottom": 1.0}


def test_overlays_draw_the_zones():
    image = np.full((HEIGHT, WIDTH, 3), 100, np.uint8)
    prediction = Prediction(1.0, np.array([[60.0, 40.0]]), np.ones(1))
    zones = zones_of(quadrants(30, 20))
    plain = render_overlay(image, prediction)
    zoned = render_overlay(image, prediction, zones=zones, zone_counts={z.name: 0.0 for z in zones})
    assert (plain[20, 5:25] == 100).all() and (zoned[20, 5:25] != 100).any()  # the edge between top and bottom


def test_a_zone_label_in_the_corner_moves_below_the_frame_count():
    image = np.zeros((256, 256, 3), np.uint8)
    zones = [Zone("corner", np.array([[0.0, 0.0], [128.0, 0.0], [128.0, 256.0], [0.0, 256.0]]))]
    prediction = Prediction(7.0, np.zeros((0, 2)), np.zeros(0))
    drawn = render_overlay(image, prediction, zones=zones, zone_counts={"corner": 7.0})
    width, height = count_box(drawn, 7.0)
    label = drawn[height + 1:height + 30, 2:width]
    assert ZONE_COLOURS[0] == (0, 255, 255)
    cyan = (label[..., 0] == 0) & (label[..., 1] > 150) & (label[..., 1] == label[..., 2])
    assert cyan.any()  # the label's (anti-aliased) text in the zone's colour, under the box


@pytest.fixture(scope="module")
def clip_and_weights(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("zoned")
    torch.manual_seed(0)
    model = build_model("tiny_density")
    with torch.no_grad():
        model.head[-1].bias.fill_(0.5)
    weights = root / "tiny.pt"
    Checkpoint("tiny_density", model.state_dict()).save(weights, for_inference=True)
    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    for _ in range(5):
        writer.write(rng.integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8))
    writer.release()
    return root / "clip.avi", weights


@pytest.mark.parametrize("rows", ["csv", "jsonl"])
def test_zoned_rows_add_up_to_the_frame_count(clip_and_weights, tmp_path, capsys, rows):
    clip, weights = clip_and_weights
    zones = tmp_path / "zones.json"
    zones.write_text(json.dumps({"zones": quadrants(33, 17)}))
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(clip), "--zones", str(zones), "--rows", rows,
                 "--video-out", "--show", "density", "--out", str(out)]) == 0
    names = [z["name"] for z in quadrants(33, 17)]
    if rows == "csv":
        table = pd.read_csv(out / "clip_counts.csv")
        zoned = table[[f"zone:{n}" for n in names]].to_numpy()
        counts = table["count"].to_numpy()
    else:
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        zoned = np.array([[r["zones"][n] for n in names] for r in lines])
        counts = np.array([r["count"] for r in lines])
    assert len(counts) == 5 and (zoned > 0).all()
    np.testing.assert_allclose(zoned.sum(1), counts, rtol=1e-5)
    assert (out / "clip_overlay.avi").is_file()


def test_zoned_images_summary(clip_and_weights, tmp_path):
    _, weights = clip_and_weights
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.random.default_rng(2).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8))
    assert main(["predict", "--weights", str(weights), str(image), "--zones",
                 str(ROOT / "docs" / "zones.example.json"), "--out", str(tmp_path / "out")]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary.columns) == ["image", "count", "n_points", "zone:entrance", "zone:platform", "zone:stairs"]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ('{"regions": []}', 'a "zones" list'),
    ('{"zones": []}', "empty"),
    ('{"zones": [{"polygon": [[0, 0], [1, 0], [1, 1]]}]}', 'no "name"'),
    ('{"zones": [{"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]}, '
     '{"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]}]}', "used twice"),
    ('{"zones": [{"name": "a", "polygon": [[0, 0], [1, 0]]}]}', "at least 3"),
    ('{"zones": [{"name": "a", "polygon": [[0, 0], [1, "x"], [1, 1]]}]}', "[x, y] pixel coordinates"),
    ('{"zones": [{"name": "a", "polygon": [[0, 0], [1, 1], [2, 2]]}]}', "no area"),
], ids=["json", "no-list", "empty", "no-name", "twice", "two-vertices", "not-numbers", "no-area"])
def test_a_malformed_zone_file_is_one_line_naming_the_problem(clip_and_weights, tmp_path, capsys, content, problem):
    path = tmp_path / "zones.json"
    path.write_text(content)
    with pytest.raises(ZooError, match=r"zones\.json"):
        load_zones(path)
    clip, weights = clip_and_weights
    assert main(["predict", "--weights", str(weights), str(clip), "--zones", str(path),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zones.json" in err[0] and problem in err[0]
    assert not (tmp_path / "out").exists()
