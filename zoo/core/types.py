"""The data types shared by the data layer, the model families and the evaluator (below all of them).

`Batch` is what the collate function builds and a family's loss reads, `Prediction` what a family's `decode`
returns and the metrics score, `TargetEncoder` what turns one sample's points into a family's training targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


@dataclass
class Batch:
    """A collated batch. Coordinates are pixels of the (padded) network input, x right, y down."""

    images: Tensor  # (B, 3, H, W) float, ImageNet-normalized, H and W multiples of the model's stride
    points: list[Tensor]  # per image, (N_i, 2) float32 (x, y); N_i may be 0
    sizes: Tensor  # (B, 2) long: (height, width) of real content; the rest is zero padding
    targets: dict[str, Tensor] = field(default_factory=dict)  # the family's encoded targets, stacked
    meta: list[dict] = field(default_factory=list)  # per image: path, index, dataset key, point ids, scale

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=non_blocking),
            points=[p.to(device, non_blocking=non_blocking) for p in self.points],
            sizes=self.sizes.to(device),
            targets={k: v.to(device, non_blocking=non_blocking) for k, v in self.targets.items()},
            meta=self.meta,
        )

    def valid_mask(self, stride: int = 1) -> Tensor:
        """(B, 1, H/stride, W/stride) float mask, 1 on real content and 0 on padding."""
        _, _, h, w = self.images.shape
        ys = torch.arange(h // stride, device=self.images.device)[None, :, None] * stride
        xs = torch.arange(w // stride, device=self.images.device)[None, None, :] * stride
        hs, ws = self.sizes[:, 0, None, None], self.sizes[:, 1, None, None]
        return ((ys < hs) & (xs < ws)).unsqueeze(1).float()


@dataclass
class Prediction:
    """What a model found in one image."""

    count: float  # the family's count (hard count of points, or the integral of a density)
    points: np.ndarray  # (M, 2) float (x, y) in input pixels
    scores: np.ndarray  # (M,) confidence of each point
    dense_map: np.ndarray | None = None  # density or heatmap (H/map_stride, W/map_stride), for overlays
    map_stride: int = 1
    map_is_density: bool = False  # True when dense_map integrates to the count: GAME then sums its regions


class TargetEncoder(Protocol):
    """Turns one sample's points into the family's training targets. Runs in DataLoader workers: keep it
    picklable and free of the network. Returned tensors are (C, H/s, W/s) maps or anything the collate can
    stack; maps are zero-padded to the batch's largest size."""

    def __call__(self, points: np.ndarray, size: tuple[int, int], meta: dict) -> dict[str, Tensor]: ...
