"""Running a model over a split and scoring it with the shared evaluator; used by train, eval and bench."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from zoo.data.collate import collate
from zoo.data.dataset import PointDataset, is_pose
from zoo.metrics import Evaluator
from zoo.pose_metrics import PoseEvaluator


def autocast(device: torch.device | str, amp: str):
    """Autocast context for `amp`, one of zoo.registry.AMP_MODES."""
    device_type = torch.device(device).type
    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type, dtype=dtype)


def evaluate(model, records, key: str, *, threshold: float, **options) -> Evaluator:
    """Score `model` on `records` (whole images, zero-padded to the model's stride) with the counting
    `Evaluator`, or, for pose data (person records), on person crops with the OKS `PoseEvaluator`.
    `options` are `evaluate_thresholds`'s."""
    return evaluate_thresholds(model, records, key, thresholds=(threshold,), **options)[0]


@torch.no_grad()
def evaluate_thresholds(model, records, key: str, *, thresholds: Sequence[float], device="cpu", amp: str = "off",
                        channels_last: bool = False, batch_size: int = 1, workers: int = 0, on_image=None,
                        forward=None) -> list[Evaluator]:
    """One evaluator per decision threshold, from one forward pass per image (the threshold only decodes).

    `on_image(prediction, batch_index_meta)` is called for every image, with its prediction at the first
    threshold (used by `zoo predict`-like callers).
    `forward` (images -> outputs) runs in place of `model` (another runtime of it); `model` decodes.
    """
    dataset = PointDataset(records, key, stride=model.stride)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers)
    evaluators = [PoseEvaluator(records) if is_pose(records) else Evaluator() for _ in thresholds]
    was_training = model.training
    model.eval()
    for batch in loader:
        images = batch.images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            outputs = (forward or model)(images)
        sizes = batch.sizes.to(device)
        for k, (threshold, evaluator) in enumerate(zip(thresholds, evaluators, strict=True)):
            predictions = model.decode(outputs, sizes, threshold)
            for prediction, points, size, meta in zip(predictions, batch.points, batch.sizes, batch.meta,
                                                      strict=True):
                evaluator.add(prediction, points.numpy(), tuple(size.tolist()), name=meta["path"], meta=meta)
                if on_image is not None and k == 0:
                    on_image(prediction, meta)
    model.train(was_training)
    return evaluators
