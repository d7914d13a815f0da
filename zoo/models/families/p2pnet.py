"""P2PNet (Song et al., ICCV 2021): dense point proposals around anchors, trained by one-to-one Hungarian
matching to the annotated heads.

Network: truncated VGG-16 -> C4 (stride 8) and C5 (stride 16) -> small FPN neck -> one map at stride 8 ->
a regression head (2A offset channels: A x-offsets, then A y-offsets) and a classification head (A logits),
with A = rows x cols anchors per 8x8 cell.

Proposal order. Anchors are stored (2, A, H/8, W/8) (x slice, y slice) and every per-proposal tensor
flattens the same (A, H/8, W/8) block in C order: proposal m is anchor a = m // (Hf * Wf) of grid cell
(i, j) = divmod(m % (Hf * Wf), Wf), and anchor a sits at row a // cols, column a % cols inside its cell.

Padding. The data layer pads inputs to a multiple of 16 so that C5 exists. A proposal is *valid* when its
anchor lies inside the image's real content (`sizes`). Invalid proposals are left out of the matching cost,
get weight 0 in the classification loss (neither positive nor negative: they are never decoded, so a label
there would only teach the network about zero padding) and are dropped by `decode` and `soft_counts`.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from zoo.core.distributed import mean_count_over_ranks
from zoo.core.errors import ZooError
from zoo.core.types import Batch, Prediction
from zoo.models.base import CrowdModel, checked_options
from zoo.models.vgg import POOL_INDICES, VGGTrunk
from zoo.models.weights.published import Converted, has_prefix, rename

GRID_STRIDE = 8  # the prediction grid is C4's: one cell per 8x8 input pixels
BACKBONES = {"vgg16": False, "vgg16_bn": True}  # name -> batch norm
TOO_MANY_HEADS = (
    "P2PNet: an image has more heads than valid proposals; the extra heads stay unmatched (counted as misses). "
    "A larger anchor grid (anchor_grid=(3, 3)) gives dense scenes more proposals."
)


def anchor_points(height: int, width: int, grid: tuple[int, int] = (2, 2), stride: int = GRID_STRIDE,
                  device: torch.device | str | None = None) -> Tensor:
    """(2, rows*cols, height // stride, width // stride) anchor coordinates: [0] holds x, [1] holds y.

    Cell (i, j) (row i, column j) is centred at x = (j + 0.5) * stride, y = (i + 0.5) * stride; its anchors
    split the cell evenly into rows x cols sub-cells and sit at their centres, which for a 2x2 grid is
    +-stride/4 around the cell centre.
    """
    rows, cols = grid
    centre_y = (torch.arange(height // stride, device=device, dtype=torch.float32) + 0.5) * stride
    centre_x = (torch.arange(width // stride, device=device, dtype=torch.float32) + 0.5) * stride
    shift_y = ((torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows - 0.5) * stride
    shift_x = ((torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols - 0.5) * stride
    # Anchor a = r * cols + c: the column index varies fastest.
    x = shift_x.repeat(rows)[:, None, None] + centre_x[None, None, :]
    y = shift_y.repeat_interleave(cols)[:, None, None] + centre_y[None, :, None]
    return torch.stack(torch.broadcast_tensors(x, y))


def match_cost(points: Tensor, logits: Tensor, targets: list[Tensor], tau: float) -> Tensor:
    """(B, T, M) matching cost of the whole batch: cost[b, i, j] = tau * ||t_bi - p_bj|| - sigmoid(logit_bj).

    `points` (B, M, 2), `logits` (B, M), `targets` B tensors (N_b, 2); T = max N_b and rows i >= N_b are
    padding, meaningless.
    """
    padded = points.new_zeros(len(targets), max((len(t) for t in targets), default=0), 2)
    for b, t in enumerate(targets):
        padded[b, : len(t)] = t
    # The matrix-product form of cdist loses a fraction of a pixel to cancellation at coordinates of a few hundred
    # pixels: enough to change which proposal a head is matched to.
    distance = torch.cdist(padded, points, compute_mode="donot_use_mm_for_euclid_dist")
    return tau * distance - torch.sigmoid(logits)[:, None, :]


def match(points: Tensor, logits: Tensor, targets: list[Tensor], valid: Tensor, tau: float
          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Optimal one-to-one matching per image: (target indices, proposal indices), proposals valid only.

    The costs are built for the whole batch at once; only the assignment runs per image, on CPU. An image
    with more heads than valid proposals matches as many as it can and warns.
    """
    with torch.no_grad():
        cost = match_cost(points.float(), logits.float(), targets, tau).cpu().numpy()
    valid = valid.cpu().numpy()
    pairs = []
    for b, t in enumerate(targets):
        candidates = np.flatnonzero(valid[b])
        if len(t) > len(candidates):
            warnings.warn(TOO_MANY_HEADS, stacklevel=2)
        rows, cols = linear_sum_assignment(cost[b, : len(t)][:, candidates])
        pairs.append((rows, candidates[cols]))
    return pairs


def _head(width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, outputs, 3, padding=1),
    )


class P2PNet(CrowdModel):
    """outputs: `points` (B, M, 2) decoded (x, y) pixels in float32, `logits` (B, M), `anchors` (B, M, 2).

    Losses (`loss`): cls = BCE with logits summed over valid proposals (positives = matched, weight 1;
    negatives weight `lambda_neg`) divided by the number of valid proposals; loc = squared Euclidean distance
    in pixels^2 summed over matched pairs and divided by the number of true points (averaged over DDP ranks),
    i.e. the mean squared localization error per head; total = cls + loc_weight * loc.

    loc_weight is in 1/pixels^2. The default 2e-3 makes the two terms comparable once training starts, when
    the classification loss has fallen to a fraction of its start and matched proposals sit a few pixels from
    their heads. At init loc is small, because every proposal starts on its anchor and the matching is then
    nearest-anchor. (The published code never applies its point loss, so its weight gives no guidance.)
    """

    stride = 16  # C5 needs inputs that are multiples of 16
    # The receptive field reaches 122 px beyond a 16-aligned block (VGG-16's conv5_3, then the neck's and heads'
    # four 3x3 convolutions at stride 8; measured as the farthest input pixel with a nonzero gradient, the same
    # for every backbone and width): 122 + one 8 px proposal cell, rounded up to 16.
    receptive_context = 144

    def __init__(self, backbone: str = "vgg16_bn", pretrained: bool | str | os.PathLike = False,
                 anchor_grid: tuple[int, int] = (2, 2), offset_scale: float = 100.0, tau: float = 0.05,
                 lambda_neg: float = 0.5, loc_weight: float = 2e-3, threshold: float = 0.5, width: int = 256):
        super().__init__()
        if backbone not in BACKBONES:
            raise ZooError(f"p2pnet: unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        try:
            rows, cols = (int(n) for n in anchor_grid)
        except (TypeError, ValueError):
            rows = cols = 0
        if rows < 1 or cols < 1:
            raise ZooError(f"p2pnet: anchor_grid must be two positive integers (rows, cols), got {anchor_grid!r}")
        pools = POOL_INDICES[BACKBONES[backbone]]
        # Taps: the last ReLU of blocks 4 and 5 (just before the 4th and 5th pools); the 5th pool is cut off.
        self.backbone = VGGTrunk(end=pools[4], taps=(pools[3] - 1, pools[4] - 1),
                                 batch_norm=BACKBONES[backbone], pretrained=pretrained)
        self.lateral4 = nn.Conv2d(512, width, 1)
        self.lateral5 = nn.Conv2d(512, width, 1)
        self.smooth = nn.Conv2d(width, width, 3, padding=1)
        self.anchor_grid = (rows, cols)
        self.num_anchors = rows * cols
        self.regression = _head(width, 2 * self.num_anchors)
        self.classification = _head(width, self.num_anchors)
        # Start every proposal on its anchor: with offsets scaled by ~100, a random last layer would scatter
        # the first proposals tens of pixels away and make the early matchings arbitrary.
        nn.init.zeros_(self.regression[-1].weight)
        nn.init.zeros_(self.regression[-1].bias)
        # Most proposals are background: start them at a 1% head probability (as RetinaNet does) instead of
        # 50%, so the first steps are not spent pushing every logit down.
        nn.init.constant_(self.classification[-1].bias, -math.log(99.0))
        self.offset_scale = offset_scale
        self.tau = tau
        self.lambda_neg = lambda_neg
        self.loc_weight = loc_weight
        self.threshold = threshold

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        batch, _, height, width = images.shape
        if height % self.stride or width % self.stride:
            raise ZooError(f"p2pnet: input {height}x{width} must have sides that are multiples of {self.stride} "
                           "(pad it; the data layer does)")
        c4, c5 = self.backbone(images)
        features = self.smooth(self.lateral4(c4) + F.interpolate(self.lateral5(c5), scale_factor=2.0))
        _, _, rows, cols = features.shape
        # Offsets in float32 even under autocast: bf16 would quantize a 500 px coordinate to 2-4 px.
        offsets = self.regression(features).float().view(batch, 2, self.num_anchors, rows, cols)
        anchors = anchor_points(height, width, self.anchor_grid, device=images.device).flatten(1).T
        return {
            "points": anchors + self.offset_scale * offsets.flatten(2).transpose(1, 2),
            "logits": self.classification(features).flatten(1),
            "anchors": anchors.expand(batch, -1, -1),
        }

    @staticmethod
    def valid_proposals(outputs: dict[str, Tensor], sizes: Tensor) -> Tensor:
        """(B, M) bool: proposals whose anchor lies inside the real content (height, width) = sizes[b]."""
        anchors = outputs["anchors"]
        sizes = sizes.to(anchors.device)
        return (anchors[..., 0] < sizes[:, 1, None]) & (anchors[..., 1] < sizes[:, 0, None])

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        points, logits = outputs["points"].float(), outputs["logits"].float()
        valid = self.valid_proposals(outputs, batch.sizes)
        pairs = match(points, logits, batch.points, valid, self.tau)
        image_idx = torch.as_tensor(np.concatenate([np.full(len(p), b) for b, (_, p) in enumerate(pairs)]),
                                    dtype=torch.long, device=logits.device)
        proposal_idx = torch.as_tensor(np.concatenate([p for _, p in pairs]), dtype=torch.long,
                                       device=logits.device)
        matched_targets = torch.cat([t[torch.as_tensor(i, dtype=torch.long, device=t.device)]
                                     for t, (i, _) in zip(batch.points, pairs, strict=True)])
        labels = torch.zeros_like(logits)
        labels[image_idx, proposal_idx] = 1.0
        weights = torch.where(labels.bool(), 1.0, self.lambda_neg) * valid
        cls = (F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum")
               / valid.sum().clamp(min=1))
        squared_error = (points[image_idx, proposal_idx] - matched_targets.to(points)).pow(2).sum()
        loc = squared_error / mean_count_over_ranks(sum(len(t) for t in batch.points), logits.device)
        return cls + self.loc_weight * loc, {"cls": cls.detach(), "loc": loc.detach()}

    def soft_counts(self, outputs: dict[str, Tensor], sizes: Tensor) -> Tensor:
        """(B,) soft count per image: the sum of sigmoid(logits) over valid proposals."""
        return (torch.sigmoid(outputs["logits"].float()) * self.valid_proposals(outputs, sizes)).sum(1)

    def decode(self, outputs: dict[str, Tensor], sizes: Tensor, threshold: float | None = None
               ) -> list[Prediction]:
        """Hard count: valid proposals with sigmoid(logit) > threshold (the model's `threshold` when None).
        Their points are clamped into the real content box [0, width] x [0, height]."""
        threshold = self.threshold if threshold is None else threshold
        scores = torch.sigmoid(outputs["logits"].float())
        keep = self.valid_proposals(outputs, sizes) & (scores > threshold)
        predictions = []
        for b, (height, width) in enumerate(sizes.tolist()):
            points = outputs["points"][b][keep[b]].float()
            points = torch.minimum(points.clamp(min=0), points.new_tensor([width, height]))
            predictions.append(Prediction(count=float(keep[b].sum()), points=points.cpu().numpy(),
                                          scores=scores[b][keep[b]].cpu().numpy()))
        return predictions


# ---- published checkpoints -----------------------------------------------------------------------------------

#: Start of each `backbone.bodyN` slice of the official code inside torchvision's `features` (with BN, without).
BODY_STARTS = {True: (0, 13, 23, 33), False: (0, 9, 16, 23)}
PUBLISHED_KEYS = ("backbone.body1.0.weight", "fpn.P4_1.weight", "regression.output.weight",
                  "classification.output.weight")
PUBLISHED_PREPROCESSING = (
    "ImageNet mean/std normalization, as in the zoo. The official test script rescales each image so both sides "
    "are multiples of 128 (rounded down); the zoo pads to a multiple of 16 instead and keeps the image's scale")


def from_published(weights: dict[str, Tensor]) -> Converted | None:
    """The official P2PNet checkpoint (`{'model': state_dict}` of TencentYoutuResearch/CrowdCounting-P2PNet).

    Its forward pass runs `backbone.body1-4`, the FPN's stride-8 level P4_2(P4_1(C4) + up2(P5_1(C5))) and, in each
    head, conv1, conv2 and output. `fpn.P5_2`, `fpn.P3_*` and the heads' conv3 / conv4 are built and saved but
    never run, so they are dropped. The 2-class softmax's person probability is sigmoid(z1 - z0), so the zoo's
    single logit takes the difference of the two classes' weights. Published channels are per anchor
    interleaved, (x, y) for regression and (background, person) for classification, with anchors row-major in
    their cell as the zoo's; the zoo holds all x offsets, then all y offsets.
    """
    if not has_prefix(weights, "backbone.body", "fpn.", "regression.", "classification."):
        return None
    batch_norm = "backbone.body1.1.running_mean" in weights
    starts = BODY_STARTS[batch_norm]
    heads = {"conv1": "0", "conv2": "2", "output": "4"}
    layout = f"official P2PNet ({'vgg16_bn' if batch_norm else 'vgg16'})"
    state, origin = rename(weights, [
        (r"backbone\.body([1-4])\.(\d+)\.(.+)",
         lambda m: f"backbone.features.{starts[int(m[1]) - 1] + int(m[2])}.{m[3]}"),
        (r"fpn\.P5_1\.(.+)", lambda m: f"lateral5.{m[1]}"),
        (r"fpn\.P4_1\.(.+)", lambda m: f"lateral4.{m[1]}"),
        (r"fpn\.P4_2\.(.+)", lambda m: f"smooth.{m[1]}"),
        (r"fpn\.(P5_2|P3_1|P3_2)\..+", lambda m: None),
        (r"(regression|classification)\.(conv1|conv2|output)\.(.+)", lambda m: f"{m[1]}.{heads[m[2]]}.{m[3]}"),
        (r"(regression|classification)\.(conv3|conv4)\..+", lambda m: None),
    ], layout)
    num_anchors = state["regression.4.weight"].shape[0] // 2
    side = math.isqrt(num_anchors)
    if side * side != num_anchors or state["classification.4.weight"].shape[0] != 2 * num_anchors:
        raise ZooError(f"{layout}: {num_anchors} anchors per cell in the regression output and "
                       f"{state['classification.4.weight'].shape[0]} classification channels; expected a square "
                       "grid and 2 classes per anchor")
    for part in ("weight", "bias"):
        offsets = state[f"regression.4.{part}"]  # channel 2a + coordinate -> coordinate * A + a
        state[f"regression.4.{part}"] = offsets.unflatten(0, (num_anchors, 2)).transpose(0, 1).flatten(0, 1)
        classes = state[f"classification.4.{part}"].unflatten(0, (num_anchors, 2))
        state[f"classification.4.{part}"] = classes[:, 1] - classes[:, 0]
    options = {"backbone": "vgg16_bn" if batch_norm else "vgg16", "anchor_grid": (side, side),
               "width": state["smooth.weight"].shape[0], "offset_scale": 100.0}
    return Converted(state, options, layout, PUBLISHED_PREPROCESSING, origin)


def implied_options(state: dict[str, Tensor], name: str) -> dict:
    """Options a zoo state dict fixes by its keys that the registered default lacks: a backbone without BN."""
    return {} if "backbone.features.1.running_mean" in state else {"backbone": "vgg16"}


def p2pnet(pretrained: bool | str | os.PathLike = False, **overrides) -> P2PNet:
    """Overrides: backbone ("vgg16_bn" | "vgg16"), anchor_grid (rows, cols), offset_scale, tau, lambda_neg,
    loc_weight, threshold, width (neck and head channels)."""
    return P2PNet(pretrained=pretrained, **checked_options("p2pnet", P2PNet, overrides))
