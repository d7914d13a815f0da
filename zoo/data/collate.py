"""Collating samples with different sizes and point counts into one `Batch`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.core.types import Batch


def collate(samples: list[dict] | list[list[dict]]) -> Batch:
    """Stack samples `{"image": (3,h,w), "points": (N,2), "targets": {...}, "meta": {...}}`; lists of crops of
    one image are flattened.

    Images are zero-padded at the bottom and right to the batch's largest size (each sample is already a
    multiple of the model's stride), target maps likewise at their own resolution; `sizes` keeps each image's
    real (h, w) so losses and decoding can ignore the padding.
    """
    samples = [s for item in samples for s in (item if isinstance(item, list) else [item])]
    images = stack_padded([s["image"] for s in samples])
    sizes = torch.tensor([s["meta"].get("valid_size", s["image"].shape[1:]) for s in samples],
                         dtype=torch.long)
    targets = {}
    for key in samples[0].get("targets", {}):
        targets[key] = stack_padded([s["targets"][key] for s in samples])
    return Batch(
        images=images,
        points=[torch.as_tensor(s["points"], dtype=torch.float32).reshape(-1, 2) for s in samples],
        sizes=sizes,
        targets=targets,
        meta=[s["meta"] for s in samples],
    )


def stack_padded(tensors: list[torch.Tensor], multiple: int = 1) -> torch.Tensor:
    """`tensors` (..., h, w) zero-padded at the bottom and right to the largest h and w, rounded up to a multiple
    of `multiple`, and stacked."""
    height = -(-max(t.shape[-2] for t in tensors) // multiple) * multiple
    width = -(-max(t.shape[-1] for t in tensors) // multiple) * multiple
    return torch.stack([F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2])) for t in tensors])
