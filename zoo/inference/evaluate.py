"""Running a model over a split and scoring it with the shared evaluator; used by train, eval and bench."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from zoo.core.errors import ZooError
from zoo.core.precision import autocast
from zoo.data.collate import collate, stack_padded
from zoo.data.dataset import PointDataset, is_pose
from zoo.inference.floor import apply_floor
from zoo.inference.views import VIEW_COUNTS, VIEWS
from zoo.metrics.counting import Evaluator
from zoo.metrics.pose import PoseEvaluator


def check_views(views: int, records) -> None:
    """Refuse a number of test-time views that `evaluate_thresholds` cannot score on `records`."""
    if views not in VIEW_COUNTS:
        raise ZooError(f"test views must be one of {', '.join(map(str, VIEW_COUNTS))}, got {views}")
    if views > 1 and is_pose(records):  # a turned or mirrored person swaps left and right keypoints
        raise ZooError("test views are for counting data; pose data is scored on the person crops as given")


def view_of(images: Tensor, sizes: Tensor, turns: int, flip: bool, stride: int) -> tuple[Tensor, Tensor]:
    """Each image's content (its top-left `sizes`) turned `turns` quarter turns, then flipped left-right if
    `flip`, zero-padded again at the bottom and right to a multiple of `stride`; and the new sizes."""
    contents = []
    for image, (h, w) in zip(images, sizes.tolist(), strict=True):
        content = torch.rot90(image[:, :h, :w], turns, (1, 2))
        contents.append(content.flip(-1) if flip else content)
    new_sizes = torch.tensor([c.shape[1:] for c in contents], dtype=sizes.dtype, device=sizes.device)
    return stack_padded(contents, stride), new_sizes


def evaluate(model, records, key: str, *, threshold: float, **options) -> Evaluator:
    """Score `model` on `records` (whole images, zero-padded to the model's stride) with the counting
    `Evaluator`, or, for pose data (person records), on person crops with the OKS `PoseEvaluator`.
    `options` are `evaluate_thresholds`'s."""
    return evaluate_thresholds(model, records, key, thresholds=(threshold,), **options)[0]


@torch.no_grad()
def evaluate_thresholds(model, records, key: str, *, thresholds: Sequence[float], device="cpu", amp: str = "off",
                        channels_last: bool = False, batch_size: int = 1, workers: int = 0, on_image=None,
                        forward=None, views: int = 1, count_floor: float = 0.0) -> list[Evaluator]:
    """One evaluator per decision threshold, from one forward pass per image and view (the threshold only
    decodes).

    With `views` > 1 (one of VIEW_COUNTS) each image's count is the mean of its counts in the first `views` of
    VIEWS, so count metrics (MAE, MSE, NAE) score that mean; points, maps, GAME and localization stay those of
    the image as given.

    `on_image(prediction, batch_index_meta)` is called for every image, with its prediction at the first
    threshold (used by `zoo predict`-like callers).
    `forward` (images -> outputs) runs in place of `model` (another runtime of it); `model` decodes.
    `count_floor` (zoo.inference.floor) applies to each image's count as scored (after the views' mean).
    """
    check_views(views, records)
    dataset = PointDataset(records, key, stride=model.stride)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    evaluators = [PoseEvaluator(records) if is_pose(records) else Evaluator() for _ in thresholds]

    def run(images: Tensor):
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            return (forward or model)(images)

    was_training = model.training
    model.eval()
    for batch in loader:
        outputs, sizes = run(batch.images), batch.sizes.to(device)
        others = [(run(images), view_sizes.to(device)) for images, view_sizes in
                  (view_of(batch.images, batch.sizes, *view, model.stride) for view in VIEWS[1:views])]
        for k, (threshold, evaluator) in enumerate(zip(thresholds, evaluators, strict=True)):
            predictions = model.decode(outputs, sizes, threshold)
            if others:
                counts = [[p.count for p in predictions]]
                counts += [[p.count for p in model.decode(out, view_sizes, threshold)] for out, view_sizes in others]
                predictions = [replace(p, count=sum(c) / len(c))
                               for p, c in zip(predictions, zip(*counts, strict=True), strict=True)]
            predictions = [apply_floor(p, count_floor) for p in predictions]
            for prediction, points, size, meta in zip(predictions, batch.points, batch.sizes, batch.meta,
                                                      strict=True):
                evaluator.add(prediction, points.numpy(), tuple(size.tolist()), name=meta["path"], meta=meta)
                if on_image is not None and k == 0:
                    on_image(prediction, meta)
    model.train(was_training)
    return evaluators
