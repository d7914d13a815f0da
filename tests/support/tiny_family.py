"""A tiny density-map family used to test the shared trainer quickly, independent of the real families.

Importing this module registers `tiny_density`. `TinyDensity.instances` keeps every network built, so a test
process can inspect the weights a training run ended with.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.core.types import Prediction
from zoo.models.base import CrowdModel
from zoo.models.registry import Recipe, is_registered, register_model


class CellCounts:
    """Target: number of points in each 4x4 cell (sums to the count exactly)."""

    def __call__(self, points, size, meta):
        h, w = size
        grid = np.zeros((h // 4, w // 4), np.float32)
        cells = np.floor(np.asarray(points) / 4).astype(int)
        np.add.at(grid, (cells[:, 1], cells[:, 0]), 1.0)
        return {"density": torch.from_numpy(grid)[None]}


class TinyDensity(CrowdModel):
    stride = 4
    count_is_sum = True
    instances: list = []

    def __init__(self, width: int = 8, batch_norm: bool = False):
        super().__init__()
        norm = [nn.BatchNorm2d(width)] if batch_norm else []
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), *norm, nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))
        TinyDensity.instances.append(self)

    def target_encoder(self):
        return CellCounts()

    def forward(self, images):
        return {"density": self.head(self.backbone(images))}

    def loss(self, outputs, batch):
        mask = batch.valid_mask(4)
        err = ((outputs["density"].float() - batch.targets["density"]) ** 2 * mask).sum() / mask.sum()
        return err, {"mse": err.detach()}

    def decode(self, outputs, sizes, threshold):
        preds = []
        for density, (h, w) in zip(outputs["density"].float(), sizes.tolist(), strict=True):
            d = density[0, : h // 4, : w // 4] * self.count_scale
            ys, xs = torch.nonzero(d > threshold, as_tuple=True)
            pts = torch.stack([xs * 4 + 2.0, ys * 4 + 2.0], 1).cpu().numpy() if len(xs) else np.zeros((0, 2))
            preds.append(Prediction(float(d.sum()), pts, d[ys, xs].cpu().numpy(), d.cpu().numpy(), 4, True))
        return preds


if not is_registered("tiny_density"):
    register_model("tiny_density", family="density", description="test-only tiny density model",
                   recipe=Recipe(optimizer="adam", lr=3e-3, backbone_lr=3e-3, epochs=4, batch_size=4,
                                 crop_size=32, scale_range=(0.9, 1.1), grad_clip=1.0, threshold=0.3,
                                 warmup_epochs=1))(lambda pretrained=False, **kw: TinyDensity(**kw))
