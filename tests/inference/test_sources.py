"""`zoo predict SOURCE` for every kind of source, from the command line: image files, folders, glob patterns, .txt
lists, a generated video file, the same video served by a local HTTP server as a stream URL, a camera index that
does not exist, a stream that cannot be reached and one that drops mid-way, and Ctrl-C in the middle of a video."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)

from zoo.cli import main
from zoo.inference import video
from zoo.models.registry import build_model
from zoo.models.weights.checkpoint import Checkpoint

FRAMES, SIZE = 12, (48, 64)  # height, width


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny density model whose map is positive everywhere (so every zone holds a share of the count)."""
    torch.manual_seed(0)
    model = build_model("tiny_density")
    with torch.no_grad():
        model.head[-1].bias.fill_(0.5)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    Checkpoint("tiny_density", model.state_dict()).save(path, for_inference=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """clip.avi (FRAMES frames, Motion-JPEG, 10 fps) and images/ with three PNG frames."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE[::-1])
    (root / "images").mkdir()
    for k in range(FRAMES):
        frame = rng.integers(0, 255, (*SIZE, 3), np.uint8)
        writer.write(frame)
        if k < 3:
            cv2.imwrite(str(root / "images" / f"frame{k}.png"), frame)
    writer.release()
    return root


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class DroppingHandler(QuietHandler):
    """Announces the whole file, sends its first half, then hangs up: a stream that drops mid-way."""

    def do_GET(self):
        data = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


def serve(directory: Path, handler=QuietHandler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def predict(weights, *argv) -> int:
    return main(["predict", "--weights", str(weights), *map(str, argv)])


@pytest.mark.parametrize("kind", ["file", "folder", "glob", "list"])
def test_image_sources(weights, media, tmp_path, kind, monkeypatch):
    images = media / "images"
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# three frames\n{images / 'frame2.png'}\n\n{images / 'frame0.png'}\n")
    source, expected = {"file": (images / "frame1.png", ["frame1.png"]),
                        "folder": (images, ["frame0.png", "frame1.png", "frame2.png"]),
                        "glob": (f"{images}/frame[12].png", ["frame1.png", "frame2.png"]),
                        "list": (listing, ["frame2.png", "frame0.png"])}[kind]
    assert predict(weights, source, "--out", tmp_path / "out") == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert [Path(p).name for p in summary["image"]] == expected
    assert (summary["count"] > 0).all()


def test_a_glob_matching_nothing_is_one_line(weights, tmp_path, capsys):
    assert predict(weights, tmp_path / "*.png", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no image files match" in err[0]


def test_a_folder_with_unreadable_files_counts_the_good_ones_and_names_the_bad(weights, media, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("frame0.png", "frame1.png"):
        (folder / name).write_bytes((media / "images" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "empty.png").write_bytes(b"")
    assert predict(weights, folder, "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "empty.png" in err
    assert sorted(Path(p).name for p in pd.read_csv(tmp_path / "out" / "summary.csv")["image"]) == [
        "frame0.png", "frame1.png"]


def test_a_video_file_with_every_and_max_frames(weights, media, tmp_path):
    assert predict(weights, media / "clip.avi", "--every", 2, "--max-frames", 3, "--out", tmp_path / "out") == 0
    table = pd.read_csv(tmp_path / "out" / "clip_counts.csv")
    assert table["frame"].tolist() == [0, 2, 4]
    np.testing.assert_allclose(table["time_s"], [0.0, 0.2, 0.4])


def test_a_video_file_stops_at_max_seconds(weights, media, tmp_path):
    assert predict(weights, media / "clip.avi", "--max-seconds", 0.35, "--out", tmp_path / "out") == 0
    assert pd.read_csv(tmp_path / "out" / "clip_counts.csv")["frame"].tolist() == [0, 1, 2, 3]


def test_a_stream_url_writes_json_lines_on_stdout(weights, media, tmp_path, capsys):
    server, url = serve(media)
    try:
        assert predict(weights, f"{url}/clip.avi", "--rows", "jsonl", "--out", tmp_path / "out") == 0
    finally:
        server.shutdown()
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["frame"] for r in rows] == list(range(FRAMES))
    assert all(r["source"] == f"{url}/clip.avi" and r["count"] > 0 and r["time_s"] >= 0 for r in rows)
    assert "12 frame(s) counted" in captured.err
    assert not (tmp_path / "out" / "clip_counts.csv").exists()  # the rows went to stdout instead


def test_the_same_rows_from_the_file_and_the_stream(weights, media, tmp_path):
    server, url = serve(media)
    try:
        assert predict(weights, f"{url}/clip.avi", "--out", tmp_path / "stream") == 0
    finally:
        server.shutdown()
    assert predict(weights, media / "clip.avi", "--out", tmp_path / "file") == 0
    streamed, filed = (pd.read_csv(tmp_path / d / "clip_counts.csv") for d in ("stream", "file"))
    assert streamed["frame"].tolist() == filed["frame"].tolist()
    np.testing.assert_allclose(streamed["count"], filed["count"], rtol=1e-5)


def test_an_unreachable_stream_fails_in_one_line(weights, tmp_path, capsys):
    server, url = serve(tmp_path)
    server.shutdown()
    server.server_close()  # nothing listens there any more
    assert predict(weights, f"{url}/clip.avi", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "cannot open this stream" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_camera_that_does_not_exist_fails_in_one_line(weights, tmp_path, capsys):
    assert predict(weights, "97", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: camera 97: no camera")
    assert not (tmp_path / "out").exists()


def test_a_stream_that_drops_keeps_its_rows_and_says_so(weights, media, tmp_path, capsys):
    server, url = serve(media, DroppingHandler)
    try:
        status = predict(weights, f"{url}/clip.avi", "--out", tmp_path / "out")
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    table = pd.read_csv(tmp_path / "out" / "clip_counts.csv")
    assert status == 1 and "stopped:" in err and f"{len(table)} row(s) kept" in err
    assert 0 < len(table) < FRAMES and table["frame"].tolist() == list(range(len(table)))


def test_ctrl_c_keeps_every_row_and_a_playable_overlay_video(weights, media, tmp_path, capsys, monkeypatch):
    batches = []

    def interrupted_after_two(run, batch):
        if len(batches) == 2:
            raise KeyboardInterrupt
        batches.append(len(batch))
        yield from real(run, batch)

    real = video.run_batch
    monkeypatch.setattr(video, "run_batch", interrupted_after_two)
    out = tmp_path / "out"
    assert predict(weights, media / "clip.avi", "--batch-size", 2, "--video-out", "--out", out) == 130
    assert "interrupted:" in capsys.readouterr().err
    assert pd.read_csv(out / "clip_counts.csv")["frame"].tolist() == [0, 1, 2, 3]
    overlay = cv2.VideoCapture(str(out / "clip_overlay.avi"))
    frames = 0
    while overlay.read()[0]:
        frames += 1
    overlay.release()
    assert frames == 4
