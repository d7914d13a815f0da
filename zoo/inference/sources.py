"""What `zoo predict SOURCE` reads: which kind of source a word names, the image files it stands for, and the frames
of videos, cameras and streams.

A SOURCE is, in this order of precedence:
- a URL (rtsp://, rtmp://, http://, https://): a stream read through OpenCV's FFmpeg backend;
- an existing folder: its image files (by suffix, natural order);
- an existing `.txt` file: a list of image paths, one a line (relative ones from the list's folder; blank lines
  and lines starting with # skipped);
- an existing file with a video suffix: a video file;
- a whole number that names no file: a camera index;
- a word with *, ? or [ that names no file: a glob pattern of image files;
- anything else: an image file (a missing one is reported like any unreadable image).

Video files, cameras and streams give frames as `Frame(name, index, time_s, image)`: `index` counts every frame
the source delivered (also the skipped ones), `time_s` is the video's own clock for files (index / frame rate)
and seconds since opening for cameras and streams, `image` is RGB. Opening a camera or a stream gives up after
`OPEN_TIMEOUT_S` with one line.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from zoo.core.errors import ZooError
from zoo.data.readers import IMAGE_SUFFIXES, natural_key

# Containers recognised by name; OpenCV (its FFmpeg backend) decides whether it can actually read each one.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
OPEN_TIMEOUT_S = 10.0  # opening a camera or a stream
READ_TIMEOUT_S = 10.0  # a stream that delivers no frame for this long has dropped

# FFmpeg and OpenCV would print their own diagnosis of a bad source beside ours; FFmpeg reads this once, at its
# first video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class Frame(NamedTuple):
    name: str  # the source's label
    index: int
    time_s: float
    image: np.ndarray  # (H, W, 3) RGB uint8


@dataclass
class Source:
    """One SOURCE word, resolved. `kind`: images | video | camera | stream; `paths` for images."""

    kind: str
    label: str
    paths: list[Path] = field(default_factory=list)
    camera: int | None = None

    @property
    def live(self) -> bool:
        """Frames arrive in real time (a camera, a stream): rows are worth writing one at a time."""
        return self.kind in ("camera", "stream")

    @property
    def stem(self) -> str:
        """The stem of the files written for it."""
        if self.kind == "camera":
            return f"camera{self.camera}"
        if self.kind == "stream":
            tail = Path(self.label.split("?")[0].rstrip("/")).stem or "stream"
            return re.sub(r"[^A-Za-z0-9_.-]+", "_", tail)
        return Path(self.label).stem


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream(word: str) -> bool:
    return word.lower().startswith(STREAM_SCHEMES)


def resolve_source(word: str) -> Source:
    """The kind of source `word` names (see the module's docstring for the order)."""
    path = Path(word)
    if is_stream(word):
        return Source("stream", word)
    if path.is_dir():
        return Source("images", word, folder_images(path))
    if path.is_file() and path.suffix.lower() == ".txt":
        return Source("images", word, listed_images(path))
    if is_video(word) and (path.exists() or not has_glob(word)):
        return Source("video", word)
    if not path.exists() and re.fullmatch(r"\d+", word):
        return Source("camera", f"camera {word}", camera=int(word))
    if not path.exists() and has_glob(word):
        found = [Path(p) for p in glob.glob(word, recursive=True)]
        # natural order within a folder, folders in their path's order
        found = sorted((p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: (str(p.parent), natural_key(p)))
        if not found:
            raise ZooError(f"{word}: no image files match this pattern")
        return Source("images", word, found)
    return Source("images", word, [path])


def has_glob(word: str) -> bool:
    return any(c in word for c in "*?[")


def folder_images(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise ZooError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(found, key=natural_key)


def listed_images(listing: Path) -> list[Path]:
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZooError(f"{listing}: cannot read this list of images ({exc})") from None
    paths = [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise ZooError(f"{listing}: lists no image paths")
    return [p if p.is_absolute() else listing.parent / p for p in paths]


# ---- frames ---------------------------------------------------------------------------------------------------

@dataclass
class Capture:
    """An open video, camera or stream: its frame rate (NaN when it does not say), its length in frames (None when
    it does not say) and its frames. After the frames are exhausted, `stopped` says why reading ended early
    (None: the source's own end, or a requested limit)."""

    source: Source
    fps: float
    length: int | None
    frames: Iterator[Frame]
    stopped: str | None = None


def open_capture(source: Source, every: int = 1, max_frames: int | None = None,
                 max_seconds: float | None = None, timeout_s: float = OPEN_TIMEOUT_S) -> Capture:
    """Open a video / camera / stream source; its frames 0, N, 2N, ... up to `max_frames` counted frames or a
    frame time beyond `max_seconds`."""
    if every < 1:
        raise ZooError(f"--every must be >= 1, got {every}")
    for flag, limit in (("--max-frames", max_frames), ("--max-seconds", max_seconds)):
        if limit is not None and limit <= 0:
            raise ZooError(f"{flag} must be > 0, got {limit}")
    if source.kind == "video" and not Path(source.label).is_file():
        raise ZooError(f"{source.label}: video not found")
    capture = open_within(source, timeout_s)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps > 0 else math.nan
    length = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    length = length if length > 0 and source.kind != "camera" else None
    result = Capture(source, fps, length, iter(()))
    result.frames = read_frames(result, capture, every, max_frames, max_seconds)
    return result


def open_within(source: Source, timeout_s: float) -> cv2.VideoCapture:
    """The opened cv2.VideoCapture, or one ZooError when it cannot be opened within `timeout_s` (OpenCV's own
    timeouts are asked for too, but not every backend honours them: the opening runs in a thread we stop
    waiting for)."""
    opened: list = []

    def attempt():
        if source.kind == "camera":
            capture = cv2.VideoCapture(source.camera)
        elif source.kind == "stream":
            milliseconds = int(timeout_s * 1000)
            capture = cv2.VideoCapture(source.label, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(READ_TIMEOUT_S * 1000)])
        else:
            capture = cv2.VideoCapture(source.label)
        opened.append(capture)

    if source.kind == "video":  # a local file: no network or device to wait for
        attempt()
    else:
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(timeout_s)
    capture = opened[0] if opened else None
    if capture is not None and capture.isOpened():
        return capture
    if capture is not None:
        capture.release()
    waited = f" within {timeout_s:g} s" if capture is None else ""
    problem = {"camera": f"no camera with this index could be opened{waited}",
               "stream": f"cannot open this stream{waited} (unreachable, or not a stream OpenCV can read)",
               "video": "cannot open this video (not a video, or a container OpenCV cannot read)"}[source.kind]
    raise ZooError(f"{source.label}: {problem}")


def read_frames(state: Capture, capture: cv2.VideoCapture, every: int, max_frames: int | None,
                max_seconds: float | None) -> Iterator[Frame]:
    source, fps = state.source, state.fps
    started = time.monotonic()
    index = counted = 0
    try:
        while max_frames is None or counted < max_frames:
            if not capture.grab():  # grab without decoding: skipped frames cost little
                if state.length is not None and index < state.length:
                    state.stopped = f"ended at frame {index} of {state.length} (truncated, or a frame OpenCV " \
                                    "cannot decode)"
                elif source.live and state.length is None:  # a live feed has no end of its own
                    state.stopped = f"stopped delivering frames after frame {index} (the stream ended or dropped)"
                return
            if source.live:
                when = time.monotonic() - started
            else:
                when = index / fps if fps > 0 else math.nan
            if max_seconds is not None and when > max_seconds:
                return
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if not ok:
                    state.stopped = f"frame {index} cannot be decoded"
                    return
                counted += 1
                yield Frame(source.label, index, when, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
