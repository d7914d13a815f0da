"""Using a trained checkpoint: scoring it on a dataset split (`zoo eval`) and running it on images (`zoo predict`).

Both rebuild the model the checkpoint records and, unless told otherwise, run it as the trainer's final test did
(the recorded threshold, mixed precision and memory format), so `zoo eval` on the run's test split reproduces
the trainer's test metrics exactly on the same device.

`zoo predict` writes, per image, `<stem>_points.csv` (x, y, score) and `<stem>_overlay.png` (the input's size),
and one `summary.csv` (image, count, n_points). Overlays are decided by the prediction's fields, never by the
model's name: a dense map (density or heatmap) is blended in as a colour map, points are drawn unless the count
comes from a density (then the points are only its local maxima), and the count is written in the top-left corner.
Images above a pixel budget are run tile by tile (zoo.inference.tiling): the same prediction, in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from zoo.core.device import resolve_device
from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.paths import data_dir
from zoo.core.precision import autocast, check_amp
from zoo.core.types import Prediction
from zoo.data import transforms as T
from zoo.data.dataset import Splits, resolve_splits
from zoo.data.readers import load_image
from zoo.data.records import Record
from zoo.deploy.fold import prepare_for_inference
from zoo.inference.evaluate import evaluate
from zoo.inference.floor import apply_floor
from zoo.inference.sources import resolve_source
from zoo.inference.tiling import Tiling, predict_tiled
from zoo.inference.zones import ZoneCounter, draw_zones
from zoo.metrics.counting import Evaluator
from zoo.models.base import CrowdModel
from zoo.models.weights.checkpoint import Checkpoint, model_from_checkpoint

MAP_OPACITY = 0.6  # blend weight of the colour map where the dense map peaks; it fades out where the map is 0
POINT_COLOUR = (255, 0, 255)  # magenta: a hue the turbo colour map never uses
TEXT_COLOUR = (255, 255, 255)


@dataclass
class Inference:
    """A model rebuilt from a checkpoint and the settings it is run with."""

    model: CrowdModel
    checkpoint: Checkpoint  # what the weights file records (its `training` the run's settings)
    device: torch.device
    threshold: float
    amp: str
    channels_last: bool
    count_floor: float = 0.0  # the checkpoint's (zoo.inference.floor); applied to whole frames
    # images -> the model's outputs dict: the model itself, or another runtime of it (zoo.deploy.runtime); `model`
    # still decodes them
    forward: Callable[[torch.Tensor], dict] | None = None

    def __post_init__(self):
        if self.forward is None:
            self.forward = self.model


def load_inference(weights: str | Path, name: str | None = None, *, device: str = "cpu",
                   threshold: float | None = None, amp: str | None = None, trust_pickle: bool = False,
                   fold_bn: bool = True) -> Inference:
    """The model a weights file holds (a zoo checkpoint, or a published one converted) on `device`, prepared for
    inference (batch norm folded, unless `fold_bn` is False: for a model that is trained further), with the
    settings every user of a checkpoint runs it with. Unset options default to what the training run recorded:
    the threshold chosen on validation (else the recipe's, else the registry recipe's), its mixed precision and
    its memory format."""
    target = resolve_device(device)
    model, checkpoint = model_from_checkpoint(Path(weights), name, device=str(target), trust_pickle=trust_pickle)
    if fold_bn:
        model = prepare_for_inference(model)
    recorded = checkpoint.training
    if threshold is None:
        threshold = checkpoint.decision_threshold()
    if amp is None:
        # fp16 autocast exists for CUDA training only (with a scaler); on a CPU run the weights as trained.
        amp = recorded.get("amp", "off")
        amp = "off" if amp == "fp16" and target.type != "cuda" else amp
    check_amp(amp)
    channels_last = bool(recorded.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Inference(model, checkpoint, target, float(threshold), amp, channels_last, float(checkpoint.count_floor))


SYNTHETIC_ONLY_NOTE = ("this model was trained only on the synthetic crowds: counts on real photos are not "
                       "meaningful; see README 'Using it on real photos'")


def synthetic_only_note(checkpoint: Checkpoint, inputs: list[str | Path]) -> str | None:
    """The note to print when a checkpoint that learned from the embedded synthetic default alone (the
    recorded `--data`, no `--init-from` weights of another run) is run on anything outside that dataset."""
    recorded = checkpoint.training
    if recorded.get("data") != "synthetic" or recorded.get("init_from"):
        return None
    synthetic = (data_dir() / "synthetic").resolve()
    outside = [p for p in map(Path, inputs) if str(p) != "synthetic" and not p.resolve().is_relative_to(synthetic)]
    return SYNTHETIC_ONLY_NOTE if outside else None


def recorded_splits(checkpoint: Checkpoint, fmt: str | None = None) -> Splits:
    """The dataset's splits exactly as the training run made them: its recorded data, format, seed and validation
    share (the synthetic default when it recorded none)."""
    recorded = checkpoint.training
    return resolve_splits(recorded.get("data", "synthetic"), fmt or recorded.get("format", "auto"),
                          recorded.get("seed", 0), recorded.get("val_fraction"))


def evaluate_checkpoint(run: Inference, data: str | None = None, fmt: str | None = None,
                        split: str = "test", views: int = 1) -> Evaluator:
    """Score `run` on a split. Without `data`, the split comes from the dataset, format, seed and validation
    share the training run recorded, so it is the very split the trainer tested on. With `data`, an unsplit list
    is scored whole as the split the user names; a dataset with named splits must have that split. `views`:
    count metrics score each image's mean count over that many test-time views (zoo.inference.evaluate.VIEWS)."""
    if data is None:
        splits = recorded_splits(run.checkpoint, fmt)
        records = splits.get(split)
    else:
        splits = resolve_splits(data, fmt or "auto", run.checkpoint.training.get("seed", 0))
        records = splits.select(split)
    return evaluate_records(run, records, f"{splits.name}:{split}", views)


def evaluate_records(run: Inference, records: list[Record], name: str, views: int = 1) -> Evaluator:
    """Score `run` on `records` as `zoo predict` would count them (its threshold, precision and count floor)."""
    return evaluate(run.model, records, name, threshold=run.threshold, device=run.device, amp=run.amp,
                    channels_last=run.channels_last, forward=run.forward, views=views, count_floor=run.count_floor)


# ---- prediction on image files --------------------------------------------------------------------------------

@dataclass
class Outcome:
    """One input image: its prediction, or why it was skipped."""

    path: Path
    prediction: Prediction | None = None
    error: str | None = None
    zones: dict[str, float] | None = None  # count per zone, with --zones


def find_images(inputs: list[str | Path]) -> list[Path]:
    """The image files `inputs` name: files as given, folders' image files, glob patterns, `.txt` lists
    (zoo.inference.sources). Missing paths are kept: they fail to load and are reported like any other unreadable
    image."""
    paths = []
    for item in inputs:
        source = resolve_source(str(item))
        if source.kind != "images":
            raise ZooError(f"{item}: a {source.kind}, not images")
        paths += source.paths
    return paths


def output_stems(paths: list[Path]) -> list[str]:
    """Each image's output file stem: its own, with -2, -3, ... added when two inputs share one."""
    taken, stems = set(), []
    for path in paths:
        stem, k = path.stem, 1
        while stem in taken:
            k += 1
            stem = f"{path.stem}-{k}"
        taken.add(stem)
        stems.append(stem)
    return stems


def predict_images(run: Inference, paths: list[Path], batch_size: int = 4, tiling: Tiling | None = None
                   ) -> Iterator[tuple[Path, np.ndarray | None, Prediction | str]]:
    """(path, RGB image, prediction) per readable image, (path, None, error message) per unreadable one, in
    input order. Consecutive images of one size share a forward pass (up to `batch_size`); each is padded to
    the model's stride, never cropped, and `decode` drops what falls into the padding. An image `tiling`
    applies to is run tile by tile on its own (zoo.inference.tiling)."""
    pending: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            image = load_image(path)
        except ZooError as exc:
            yield from run_batch(run, pending)
            pending = []
            yield path, None, str(exc)
            continue
        if tiling is not None and tiling.applies(*image.shape[:2]):
            yield from run_batch(run, pending)
            pending = []
            tiled = predict_tiled(image, lambda window: predict_one(run, window), tiling)
            yield path, image, apply_floor(tiled, run.count_floor)
            continue
        if pending and (len(pending) == batch_size or pending[0][1].shape != image.shape):
            yield from run_batch(run, pending)
            pending = []
        pending.append((path, image))
    yield from run_batch(run, pending)


@torch.no_grad()
def run_batch(run: Inference, batch: list[tuple[Path, np.ndarray]], whole_frames: bool = True):
    """(path, image, prediction) per image of `batch` (one size), from one forward pass; the count floor applies
    to `whole_frames` only, never to tiles of a frame."""
    if not batch:
        return
    none = np.zeros((0, 2), np.float32)
    samples = [T.pad_to_multiple(T.Sample(image, none, np.zeros(0, np.int64)), run.model.stride)
               for _, image in batch]
    images = torch.stack([T.to_tensor(s) for s in samples]).to(run.device)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    sizes = torch.tensor([s.valid_size for s in samples], dtype=torch.long, device=run.device)
    with autocast(run.device, run.amp):
        outputs = run.forward(images)
    for (path, image), prediction in zip(batch, run.model.decode(outputs, sizes, run.threshold), strict=True):
        yield path, image, apply_floor(prediction, run.count_floor) if whole_frames else prediction


def predict_one(run: Inference, image: np.ndarray) -> Prediction:
    """`image`'s prediction from a forward pass of its own (a tile of a larger image)."""
    ((_, _, prediction),) = run_batch(run, [(None, image)], whole_frames=False)
    return prediction


def predict_to_folder(run: Inference, inputs: list[str | Path], out: str | Path, batch_size: int = 4,
                      on_outcome: Callable[[Outcome], None] | None = None,
                      tiling: Tiling | None = None, zones: ZoneCounter | None = None, show: str | None = None
                      ) -> list[Outcome]:
    """Predict every image of `inputs` (files, folders, glob patterns, lists), writing its points CSV and overlay to
    `out` as it goes and `summary.csv` at the end; each file is written atomically. Unreadable images are skipped
    and come back with their error. Images `tiling` applies to are run tile by tile. With `zones`, each outcome
    holds its count per zone, and the summary one column per zone (`zone_column`)."""
    out = Path(out)
    paths = find_images(inputs)
    outcomes = []
    # One result per path, in input order, so results and stems pair up (a path given twice included).
    results = predict_images(run, paths, batch_size, tiling)
    for (path, image, result), stem in zip(results, output_stems(paths), strict=True):
        if image is None:
            outcome = Outcome(path, error=result)
        else:
            counts = zones.counts(result, image.shape[:2]) if zones else None
            outcome = Outcome(path, result, zones=counts)
            write_points(out / f"{stem}_points.csv", result)
            write_png(out / f"{stem}_overlay.png",
                      render_overlay(image, result, show, zones.zones if zones else None, counts))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    names = zones.names if zones else []
    rows = [{"image": str(o.path), "count": o.prediction.count, "n_points": len(o.prediction.points),
             **{zone_column(n): o.zones[n] for n in names}} for o in outcomes if o.prediction is not None]
    summary = pd.DataFrame(rows, columns=["image", "count", "n_points", *map(zone_column, names)])
    atomic_write(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False))
    return outcomes


def zone_column(name: str) -> str:
    """A zone's count column in the CSV files."""
    return f"zone:{name}"


def write_points(path: Path, prediction: Prediction) -> None:
    table = np.column_stack([np.asarray(prediction.points, np.float64).reshape(-1, 2),
                             np.asarray(prediction.scores, np.float64).reshape(-1)])
    atomic_write(path, lambda tmp: np.savetxt(tmp, table, fmt=("%.2f", "%.2f", "%.4f"), delimiter=",",
                                              header="x,y,score", comments=""))


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ZooError(f"{path}: cannot encode the overlay as PNG")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))


# ---- overlays -------------------------------------------------------------------------------------------------

def render_overlay(image: np.ndarray, prediction: Prediction, show: str | None = None, zones=None,
                   zone_counts: dict[str, float] | None = None) -> np.ndarray:
    """The (H, W, 3) RGB `image` with what the model found drawn on it; same size as the input.

    `show`: None draws what the prediction is (its dense map blended in, its points unless they are only a
    density's local maxima); "points" the points alone; "density" the dense map alone (the points where the
    prediction has no map). `zones` (zoo.inference.zones.Zone) are outlined with their `zone_counts`."""
    if show not in (None, "points", "density"):
        raise ZooError(f"unknown overlay {show!r}; choose points or density")
    canvas = image.copy()
    has_map = prediction.dense_map is not None
    if has_map and show != "points":
        canvas = blend_map(canvas, prediction.dense_map, prediction.map_stride)
    if show == "points" or not has_map or (show is None and not prediction.map_is_density):
        draw_points(canvas, prediction.points)
    if zones:
        draw_zones(canvas, zones, zone_counts, keep_clear=count_box(canvas, prediction.count))
    draw_count(canvas, prediction.count)
    return canvas


def blend_map(image: np.ndarray, dense_map: np.ndarray, stride: int) -> np.ndarray:
    """Blend a map whose cell (i, j) covers pixels [i*s, (i+1)*s) x [j*s, (j+1)*s) as a turbo colour map,
    scaled to its own peak; the blend weight follows the map, so empty regions show the image untouched."""
    h, w = image.shape[:2]
    level = np.clip(np.asarray(dense_map, np.float32).reshape(dense_map.shape[-2:]), 0, None)
    peak = float(level.max())
    level = level / peak if peak > 0 else level
    # Scaling by exactly `stride` keeps cell centres on pixel centres; the map's padding cells are cut off.
    level = cv2.resize(level, (level.shape[1] * stride, level.shape[0] * stride), interpolation=cv2.INTER_LINEAR)
    # A map that stops short of the image's edge (floor instead of ceil cells) shows the image untouched there.
    level = np.pad(level, ((0, max(0, h - level.shape[0])), (0, max(0, w - level.shape[1]))))
    level = np.clip(level[:h, :w], 0, 1)
    colour = cv2.cvtColor(cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    alpha = MAP_OPACITY * level[..., None]
    return np.round(image * (1 - alpha) + colour * alpha).astype(np.uint8)


def draw_points(canvas: np.ndarray, points: np.ndarray) -> None:
    """Filled dots with a dark rim at the points (pixel-area coordinates, drawn with sub-pixel precision)."""
    radius = max(2, round(min(canvas.shape[:2]) / 120))
    subpixel = 16  # OpenCV's fixed-point drawing with shift=4; its integer coordinates are pixel centres
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        centre = (round((x - 0.5) * subpixel), round((y - 0.5) * subpixel))
        cv2.circle(canvas, centre, (radius + 1) * subpixel, (0, 0, 0), -1, cv2.LINE_AA, shift=4)
        cv2.circle(canvas, centre, radius * subpixel, POINT_COLOUR, -1, cv2.LINE_AA, shift=4)


def _count_text(canvas: np.ndarray, count: float) -> tuple[str, float, int, int, int, int]:
    text = f"count {count:.0f}" if float(count).is_integer() else f"count {count:.1f}"
    scale = max(0.3, canvas.shape[0] / 600)
    thickness = max(1, round(scale * 1.5))
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    return text, scale, thickness, tw, th, baseline


def count_box(canvas: np.ndarray, count: float) -> tuple[int, int]:
    """Width and height of the box `draw_count` fills in the top-left corner."""
    _, _, _, tw, th, baseline = _count_text(canvas, count)
    pad = max(2, th // 3)
    return tw + 2 * pad, th + baseline + 2 * pad


def draw_count(canvas: np.ndarray, count: float) -> None:
    """`count N` in white on a black box in the top-left corner, sized to the image."""
    text, scale, thickness, _, th, _ = _count_text(canvas, count)
    pad = max(2, th // 3)
    width, height = count_box(canvas, count)
    cv2.rectangle(canvas, (0, 0), (width, height), (0, 0, 0), -1)
    cv2.putText(canvas, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, thickness, cv2.LINE_AA)
