"""`zoo predict clip.mp4 | 0 | rtsp://...`: count people in every Nth frame of a video file, a camera or a stream.

Per source it writes one row per counted frame AS IT GOES, flushed, so another program can follow: into
`<stem>_counts.csv` (frame, time_s, count, n_points, and a `zone:NAME` column per zone), or as JSON lines on a
text stream (`{"source", "frame", "time_s", "count", "n_points", "zones"}`); then `<stem>_counts.png` (count over
time) and, on request, `<stem>_overlay.avi` (the counted frames with predict's overlay drawn on them, Motion-JPEG:
every OpenCV build writes and reads it). Frames go through the same batching, padding and decoding as images;
cameras and streams are counted one frame at a time, so each row comes as soon as its frame is counted.

Nothing already written is lost: the rows file and the overlay video are opened at the first counted frame (an
unreadable or empty source leaves nothing behind) and closed properly however the reading ends: at the source's
end, at a limit, when the source drops (`VideoResult.stopped` says so) or on Ctrl-C (`interrupted`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import pandas as pd

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.inference.predict import Inference, render_overlay, run_batch, zone_column
from zoo.inference.sources import Frame, Source, is_video, open_capture, resolve_source
from zoo.inference.zones import ZoneCounter

__all__ = ["COLUMNS", "VideoResult", "is_video", "predict_video"]

COLUMNS = ["frame", "time_s", "count", "n_points"]


class RowWriter:
    """Rows as they come, each flushed: a CSV file created at the first row, or JSON lines on `stream`."""

    def __init__(self, source: Source, zone_names: list[str], csv_path: Path | None = None,
                 stream: TextIO | None = None):
        self.source, self.zone_names, self.csv_path, self.stream = source, zone_names, csv_path, stream
        self._file = self._csv = None
        self.written = 0

    @property
    def target(self) -> str:
        return str(self.csv_path) if self.csv_path is not None else "stdout"

    def write(self, row: dict, zones: dict[str, float] | None) -> None:
        if self.csv_path is None:
            record = {"source": self.source.label, **row, "time_s": none_if_nan(row["time_s"])}
            if zones is not None:
                record["zones"] = zones
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        else:
            if self._file is None:
                self.csv_path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.csv_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close)
                self._csv = csv.writer(self._file)
                self._csv.writerow(COLUMNS + [zone_column(n) for n in self.zone_names])
            self._csv.writerow([row[c] for c in COLUMNS] + [(zones or {})[n] for n in self.zone_names])
            self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def none_if_nan(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class VideoResult:
    """What counting a source gave: its rows (frame, time_s, count, n_points), where they were written, and why
    reading ended early if it did."""

    source: Source
    table: pd.DataFrame
    target: str
    stopped: str | None = None  # the source ended before its end or limit (truncated file, dropped stream)
    interrupted: bool = False  # Ctrl-C
    files: list[Path] = field(default_factory=list)


def predict_video(run: Inference, source: Source | str | Path, out: str | Path, every: int = 1, batch_size: int = 4,
                  video_out: bool = False, *, max_frames: int | None = None, max_seconds: float | None = None,
                  stream: TextIO | None = None, zones: ZoneCounter | None = None,
                  show: str | None = None) -> VideoResult:
    """Count every `every`-th frame of a video file, camera or stream (up to `max_frames` counted frames or
    `max_seconds` of its clock); write the rows (to `stream` as JSON lines when given, else the CSV), the plot and
    (with `video_out`) the overlay video into `out`."""
    source = source if isinstance(source, Source) else resolve_source(str(source))
    out = Path(out)
    capture = open_capture(source, every, max_frames, max_seconds)
    writer = RowWriter(source, zones.names if zones else [],
                       None if stream is not None else out / f"{source.stem}_counts.csv", stream)
    overlay = OverlayVideo(out / f"{source.stem}_overlay.avi", capture.fps / every if capture.fps > 0 else 1.0) \
        if video_out else None
    rows: list[dict] = []
    interrupted = False
    try:
        for row, zone_counts, drawn in count_frames(run, capture.frames, 1 if source.live else batch_size,
                                                    zones, show, overlay is not None):
            writer.write(row, zone_counts)
            rows.append(row)
            if overlay is not None:
                overlay.write(drawn)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.close()
        if overlay is not None:
            overlay.close()
    if not rows and not interrupted:
        why = f" ({capture.stopped})" if capture.stopped else ""
        raise ZooError(f"{source.label}: no frame could be read{why} (an empty video, or a codec OpenCV cannot "
                       "decode)" if source.kind == "video" else f"{source.label}: no frame could be read{why}")
    table = pd.DataFrame(rows, columns=COLUMNS)
    files = [Path(writer.target)] if writer.csv_path is not None and rows else []
    if rows:
        files.append(write_plot(out / f"{source.stem}_counts.png", table, Path(source.label).name or source.label))
    if overlay is not None and overlay.frames:
        files.append(overlay.path)
    return VideoResult(source, table, writer.target, capture.stopped, interrupted, files)


def count_frames(run: Inference, frames: Iterator[Frame], batch_size: int, zones: ZoneCounter | None,
                 show: str | None, draw: bool) -> Iterator[tuple[dict, dict | None, np.ndarray | None]]:
    """(row, count per zone, overlay as BGR when `draw`) per frame, in order."""
    pending: list[tuple[Frame, np.ndarray]] = []

    def flush():
        for frame, image, prediction in run_batch(run, pending):
            counts = zones.counts(prediction, image.shape[:2]) if zones else None
            row = {"frame": frame.index, "time_s": frame.time_s, "count": prediction.count,
                   "n_points": len(prediction.points)}
            drawn = None
            if draw:
                rgb = render_overlay(image, prediction, show, zones.zones if zones else None, counts)
                drawn = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            yield row, counts, drawn
        pending.clear()

    for frame in frames:
        if pending and pending[0][1].shape != frame.image.shape:  # a stream may change its size
            yield from flush()
        pending.append((frame, frame.image))
        if len(pending) == batch_size:
            yield from flush()
    yield from flush()


class OverlayVideo:
    """A Motion-JPEG AVI of BGR frames at `path`, opened at the first frame (its size) and closed by `close`,
    which leaves a playable file whenever it holds a frame."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            height, width = frame.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise ZooError("this OpenCV build cannot write Motion-JPEG video (--video-out)")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def write_plot(path: Path, table: pd.DataFrame, title: str) -> Path:
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
    return path
