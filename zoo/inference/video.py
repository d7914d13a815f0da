"""`zoo predict clip.mp4`: count people in every Nth frame of a video.

Per video it writes `<stem>_counts.csv` (frame, time_s, count, n_points), `<stem>_counts.png` (count over time)
and, on request, `<stem>_overlay.avi` (the counted frames with predict's overlay drawn on them, Motion-JPEG: every
OpenCV build writes and reads it). Frames go through the same batching, padding and decoding as images. Every file
is written atomically once the whole video has been read, so an unreadable or empty video leaves nothing behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.inference.predict import Inference, render_overlay, run_batch

# Containers recognised by name; OpenCV (its FFmpeg backend) decides whether it can actually read each one.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
COLUMNS = ["frame", "time_s", "count", "n_points"]


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_frames(path: Path, every: int = 1) -> tuple[float, Iterator[tuple[int, np.ndarray]]]:
    """The video's frame rate (NaN when the container does not say) and its frames 0, N, 2N, ... as RGB."""
    if every < 1:
        raise ZooError(f"--every must be >= 1, got {every}")
    if not Path(path).is_file():
        raise ZooError(f"{path}: video not found")
    # FFmpeg would print its own diagnosis of a bad file beside ours; OpenCV reads this once, at its first video.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ZooError(f"{path}: cannot open this video (not a video, or a container OpenCV cannot read)")
    fps = capture.get(cv2.CAP_PROP_FPS)

    def frames():
        index = 0
        try:
            while capture.grab():  # grab without decoding: skipped frames cost little
                if index % every == 0:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        raise ZooError(f"{path}: frame {index} cannot be decoded")
                    yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()

    return (fps if fps > 0 else math.nan), frames()


def predict_video(run: Inference, path: str | Path, out: str | Path, every: int = 1, batch_size: int = 4,
                  video_out: bool = False) -> pd.DataFrame:
    """Count every `every`-th frame of `path`; write the CSV, the plot and (with `video_out`) the overlay video
    into `out`. Returns the CSV's rows."""
    path, out = Path(path), Path(out)
    fps, frames = read_frames(path, every)
    if video_out:  # frames are drawn and written as they are counted: a long video never sits in memory
        tables = []

        def count_into(tmp):
            with mjpeg_writer(tmp, fps / every if fps > 0 else 1.0) as write_frame:
                tables.append(count_frames(run, path, fps, frames, batch_size, write_frame))

        atomic_write(out / f"{path.stem}_overlay.avi", count_into)
        table = tables[0]
    else:
        table = count_frames(run, path, fps, frames, batch_size)
    atomic_write(out / f"{path.stem}_counts.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_plot(out / f"{path.stem}_counts.png", table, path.name)
    return table


def count_frames(run: Inference, path: Path, fps: float, frames: Iterator[tuple[int, np.ndarray]], batch_size: int,
                 on_overlay: Callable[[np.ndarray], None] | None = None) -> pd.DataFrame:
    """One row per frame; `on_overlay` gets each frame with its overlay drawn (BGR)."""
    rows, pending = [], []

    def flush():
        for index, image, prediction in run_batch(run, pending):
            rows.append({"frame": index, "time_s": index / fps, "count": prediction.count,
                         "n_points": len(prediction.points)})
            if on_overlay is not None:
                on_overlay(cv2.cvtColor(render_overlay(image, prediction), cv2.COLOR_RGB2BGR))
        pending.clear()

    for index, image in frames:  # a video's frames share one size, so they batch in order
        pending.append((index, image))
        if len(pending) == batch_size:
            flush()
    flush()
    if not rows:
        raise ZooError(f"{path}: no frame could be read (an empty video, or a codec OpenCV cannot decode)")
    return pd.DataFrame(rows, columns=COLUMNS)


@contextmanager
def mjpeg_writer(tmp: str, fps: float):
    """A function writing BGR frames to a Motion-JPEG AVI at `tmp`, opened at the first frame (its size).
    OpenCV picks the container from the file's suffix, which the temporary file of `atomic_write` lacks: the
    video is written beside it as `<tmp>.avi` and moved onto it once complete."""
    named = f"{tmp}.avi"
    writers = []

    def write_frame(frame: np.ndarray) -> None:
        if not writers:
            height, width = frame.shape[:2]
            writers.append(cv2.VideoWriter(named, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height)))
            if not writers[0].isOpened():
                raise ZooError("this OpenCV build cannot write Motion-JPEG video (--video-out)")
        writers[0].write(frame)

    try:
        yield write_frame
        for writer in writers:
            writer.release()
        os.replace(named, tmp)
    finally:
        for writer in writers:
            writer.release()
        Path(named).unlink(missing_ok=True)


def write_plot(path: Path, table: pd.DataFrame, title: str) -> None:
    """Count over time (over the frame index when the video does not state its frame rate)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    timed = table["time_s"].notna().all()
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    try:
        ax.plot(table["time_s"] if timed else table["frame"], table["count"], marker="." if len(table) < 60 else "")
        ax.set(xlabel="time (s)" if timed else "frame", ylabel="count", title=title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
