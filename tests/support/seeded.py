"""Real families with seeded output layers, so that untrained networks find heads a test can compare."""

from __future__ import annotations

import numpy as np
import torch

from zoo.models.factory import create_model


def seeded_p2pnet():
    net = create_model("p2pnet", backbone="vgg16", width=32)
    with torch.no_grad():  # proposals spread around their anchors, about half of them above 0.5
        net.regression[-1].weight.normal_(0, 2e-3)
        net.classification[-1].bias.zero_()
    return net

def seeded_csrnet():
    net = create_model("csrnet")
    with torch.no_grad():  # a map of ~1 head per cell that varies with the image, instead of the near-zero start
        net.output.weight.mul_(100)
        net.output.bias.fill_(1.0)
    return net

def threshold_in_widest_gap(scores: np.ndarray) -> float:
    """A decision threshold midway in the widest gap between the float32 scores, so that no score lies near
    it: a point flipping across the threshold would be chance, not precision."""
    ordered = np.sort(scores)[len(scores) // 4:]  # keep at least a quarter of the points below it
    gaps = np.diff(ordered)
    k = int(np.argmax(gaps))
    return float(ordered[k] + gaps[k] / 2)
