"""Collating samples with different sizes and point counts into one `Batch`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.types import Batch


def collate(samples: list[dict] | list[list[dict]]) -> Batch:
    """Stack samples `{"image": (3,h,w), "points": (N,2), "targets": {...}, "meta": {...}}`; lists of crops of
    one image are flattened.

    Images are zero-padded at the bottom and right to the batch's largest size (each sample is already a
    multiple of the model's stride), target maps likewise at their own resolution; `sizes` keeps each image's
    real (h, w) so losses and decoding can ignore the padding.
    """
    samples = [s for item in samples for s in (item if isinstance(item, list) else [item])]
    height = max(s["image"].shape[1] for s in samples)
    width = max(s["image"].shape[2] for s in samples)
    images = torch.stack([_pad_to(s["image"], height, width) for s in samples])
    sizes = torch.tensor([s["meta"].get("valid_size", s["image"].shape[1:]) for s in samples],
                         dtype=torch.long)
    targets = {}
    for key in samples[0].get("targets", {}):
        maps = [s["targets"][key] for s in samples]
        th = max(m.shape[-2] for m in maps)
        tw = max(m.shape[-1] for m in maps)
        targets[key] = torch.stack([_pad_to(m, th, tw) for m in maps])
    return Batch(
        images=images,
        points=[torch.as_tensor(s["points"], dtype=torch.float32).reshape(-1, 2) for s in samples],
        sizes=sizes,
        targets=targets,
        meta=[s["meta"] for s in samples],
    )


def _pad_to(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]))
