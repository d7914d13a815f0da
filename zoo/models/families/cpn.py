"""CPN, the Cascaded Pyramid Network: a timm ResNet, a GlobalNet feature pyramid that predicts a heatmap from
every level, and a RefineNet that fuses all levels into the final heatmap, trained with L2 losses and online
hard keypoint mining (OHKM) on the RefineNet output.

One network, two modes:
- crowd mode (`num_keypoints=1`): one head heatmap; the zoo's tables compare this mode;
- keypoint mode (`num_keypoints=K`, e.g. 17 for COCO): one channel per keypoint type, on person crops
  (zoo.data.coco). The target encoder reads each point's type from `meta["labels"][meta["point_ids"][i]]`
  (labels are per row of the original annotation, point ids say which rows survived cropping) and marks which
  types the crop has (`labelled`): OHKM keeps the hardest 8/17 of those. `decode` returns exactly K points,
  row k the argmax of channel k shifted a quarter cell toward its higher neighbour on each axis, its score the
  channel's maximum. With COCO's 17 types, evaluation averages the heatmaps of the crop and of its mirror image
  (left and right types swapped back), as pytorch-cpn's test does.

Outputs at stride 4, `h = ceil(H / 4)`, `w = ceil(W / 4)`:
    {"global": [4 x (B, K, h, w)] from C5, C4, C3, C2 (coarsest first: paired with the widest target),
     "refine": (B, K, h, w)}

Geometry: cell j of a backbone level with stride s is centred on input pixel s * j (every stride-2 conv and
pool is padded symmetrically). Points use the data layer's pixel-area coordinates (pixel j covers [j, j+1),
centre j + 0.5), so a point at x lands at (x - 0.5) / 4 on the output grid, and all resizing keeps cells at
those positions for any input size, not only multiples of 32.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core.errors import ZooError
from zoo.core.types import Batch, Prediction
from zoo.data.coco import COCO_KEYPOINTS, mirror_permutation
from zoo.models.base import CrowdModel, checked_options
from zoo.models.peaks import local_maxima
from zoo.models.pretrained import load_matching, load_state_dict_file

OUTPUT_STRIDE = 4
PIXEL_CENTRE = 0.5  # continuous coordinate of pixel 0's centre
LEVEL_STRIDES = (32, 16, 8, 4)  # C5, C4, C3, C2: the order GlobalNet runs top-down in
REFINE_DEPTHS = (3, 2, 1, 0)  # bottlenecks per level in RefineNet, deepest level first
WIDTH = 256  # pyramid channels
GLOBAL_WEIGHT = 0.5  # the published loss halves each GlobalNet term
# Initial gain of the BN that ends every heatmap head. Targets are mostly zero with a spread of about 0.1-0.2;
# BN's default gain of 1 starts the heads at unit-variance noise that Adam shrinks by only ~lr per step, so the
# first steps are spent silencing noise instead of finding heads. A gain near the targets' spread starts close.
HEATMAP_GAIN_INIT = 0.1


def _opencv_sigma(kernel_size: int) -> float:
    # The published targets blur with cv2.GaussianBlur(kernel, sigma=0), which derives sigma this way.
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


#: Keypoint mode: the published kernels 15, 11, 9, 7 (GlobalNet C5..C2; RefineNet shares 7) at 256x192 input,
#: i.e. on a 64x48 grid at stride 4, as sigmas in output cells: 2.6, 2.0, 1.7, 1.4.
POSE_SIGMAS = tuple(_opencv_sigma(k) for k in (15, 11, 9, 7))
#: Crowd mode: heads can be 2 cells apart, so the target is narrow: a prediction blurs close heads together
#: more like a sum than a maximum, and a wider Gaussian merges them into one peak sooner. It is not narrower
#: because the target of a head midway between cells must still peak well above the decoding threshold: 0.64 at
#: 0.75 cells, 0.37 at 0.5. GlobalNet levels widen it by the published ratios 2.6 : 2.0 : 1.7 : 1.4.
#: benchmarks/cpn_ohkm_ablation.py measures the choices of this mode.
CROWD_SIGMA = 0.75


COUNTS = ("peaks", "mass")


def target_mass(sigma: float) -> float:
    """Sum of one head's target heatmap (`render_heatmap` at a cell centre): what the mass count divides by."""
    radius = math.ceil(3 * sigma) + 1
    return float(render_heatmap(np.array([[radius, radius]], np.float32), np.zeros(1, np.int64), 1,
                                (2 * radius + 1, 2 * radius + 1), sigma).sum())


def level_sigmas(refine_sigma: float) -> tuple[float, ...]:
    """Target sigmas of the GlobalNet levels C5..C2 for a RefineNet sigma, in the published proportions."""
    return tuple(refine_sigma * s / POSE_SIGMAS[-1] for s in POSE_SIGMAS)



# ----------------------------------------------------------------------------------------------- geometry


def resize_aligned(x: Tensor, size: tuple[int, int], ratio: float) -> Tensor:
    """Bilinear resize of (B, C, h, w) to `size`, where output cell j samples input coordinate j * ratio,
    clamped to the last cell.

    `ratio` is output stride / input stride: 1 or the inverse of a whole upsampling factor (the pyramid's levels
    are powers of two apart). Unlike `interpolate(size=...)`, which stretches the grid to fit the corners, this
    keeps cells on their input pixels when a side is not an exact multiple (100x76 inputs). The last row and
    column are repeated so that samples past them read them (the clamp); `align_corners` interpolation to
    (n - 1) * factor + 1 cells then puts cell j exactly at j / factor. Equal strides only crop or repeat edges.
    """
    factor = round(1 / ratio)
    if factor < 1 or abs(factor * ratio - 1) > 1e-6:
        raise ValueError(f"resize_aligned: ratio {ratio} is not 1 / a whole number")
    h, w = x.shape[-2:]
    # cells the samples need: coordinates up to (size - 1) / factor, so ceil((size - 1) / factor) + 1
    extra_h = max(0, -(-(size[0] - 1) // factor) + 1 - h)
    extra_w = max(0, -(-(size[1] - 1) // factor) + 1 - w)
    if factor > 1:
        extra_h, extra_w = max(extra_h, 1), max(extra_w, 1)
    if extra_h or extra_w:
        x = F.pad(x, (0, extra_w, 0, extra_h), mode="replicate")
    if factor > 1:
        grown = ((x.shape[-2] - 1) * factor + 1, (x.shape[-1] - 1) * factor + 1)
        x = F.interpolate(x, size=grown, mode="bilinear", align_corners=True)
    return x[..., : size[0], : size[1]]


# ----------------------------------------------------------------------------------------------- network


def heatmap_norm(num_keypoints: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(num_keypoints)
    nn.init.constant_(norm.weight, HEATMAP_GAIN_INIT)
    return norm


def conv_bn(c_in: int, c_out: int, kernel: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck with expansion 2 (in -> mid -> mid -> 2 * mid), as RefineNet uses it."""

    def __init__(self, c_in: int, mid: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, mid), conv_bn(mid, mid, 3), conv_bn(mid, 2 * mid, relu=False))
        self.shortcut = nn.Identity() if c_in == 2 * mid else conv_bn(c_in, 2 * mid, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class PredictHead(nn.Module):
    """GlobalNet head: 1x1 conv + BN + ReLU, 3x3 conv to K channels, resize to the output grid, BN."""

    def __init__(self, num_keypoints: int):
        super().__init__()
        self.features = conv_bn(WIDTH, WIDTH)
        self.to_heatmap = nn.Conv2d(WIDTH, num_keypoints, 3, padding=1, bias=False)
        self.norm = heatmap_norm(num_keypoints)

    def forward(self, x: Tensor, size: tuple[int, int], ratio: float) -> Tensor:
        return self.norm(resize_aligned(self.to_heatmap(self.features(x)), size, ratio))


class GlobalNet(nn.Module):
    """Feature pyramid: lateral 1x1 per level; top-down, the coarser level is upsampled x2 (to the lateral's
    size), passed through 1x1 conv + BN and added. Returns the pyramid and one heatmap per level."""

    def __init__(self, in_channels: list[int], num_keypoints: int):
        super().__init__()
        self.laterals = nn.ModuleList(conv_bn(c, WIDTH) for c in in_channels)
        self.top_down = nn.ModuleList(conv_bn(WIDTH, WIDTH, relu=False) for _ in in_channels[1:])
        self.heads = nn.ModuleList(PredictHead(num_keypoints) for _ in in_channels)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> tuple[list[Tensor], list[Tensor]]:
        pyramid = [self.laterals[0](features[0])]
        for lateral, top_down, x in zip(self.laterals[1:], self.top_down, features[1:], strict=True):
            lateral_map = lateral(x)
            coarser = resize_aligned(pyramid[-1], lateral_map.shape[-2:], 0.5)
            pyramid.append(lateral_map + top_down(coarser))
        heatmaps = [head(p, size, OUTPUT_STRIDE / s)
                    for head, p, s in zip(self.heads, pyramid, LEVEL_STRIDES, strict=True)]
        return pyramid, heatmaps


class RefineNet(nn.Module):
    """3, 2, 1, 0 bottlenecks on the C5..C2 pyramid levels, each resized to the output grid; the four are
    concatenated (4 x 256 channels) into a bottleneck and a 3x3 conv to K channels + BN."""

    def __init__(self, num_keypoints: int):
        super().__init__()
        self.cascades = nn.ModuleList(
            nn.Sequential(*(Bottleneck(WIDTH, WIDTH // 2) for _ in range(depth))) for depth in REFINE_DEPTHS
        )
        self.fuse = nn.Sequential(
            Bottleneck(len(REFINE_DEPTHS) * WIDTH, WIDTH // 2),
            nn.Conv2d(WIDTH, num_keypoints, 3, padding=1, bias=False),
            heatmap_norm(num_keypoints),
        )

    def forward(self, pyramid: list[Tensor], size: tuple[int, int]) -> Tensor:
        levels = [
            resize_aligned(cascade(p), size, OUTPUT_STRIDE / s)
            for cascade, p, s in zip(self.cascades, pyramid, LEVEL_STRIDES, strict=True)
        ]
        return self.fuse(torch.cat(levels, dim=1))


def build_backbone(name: str, pretrained: bool | str | os.PathLike = False) -> nn.Module:
    """timm `name` returning C2..C5 (strides 4..32); `pretrained` is False, or a local state-dict path."""
    try:
        net = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4), pretrained=False)
    except RuntimeError as exc:
        raise ZooError(f"cpn backbone {name!r}: timm cannot build it ({exc})") from None
    if tuple(net.feature_info.reduction()) != LEVEL_STRIDES[::-1]:
        raise ZooError(f"cpn backbone {name!r}: features at strides {net.feature_info.reduction()}, need 4..32")
    if pretrained is True:
        raise ZooError(
            f"cpn backbone {name!r}: pretrained=True would download ImageNet weights and nothing may be "
            "downloaded here; pass pretrained=PATH (a local timm/torchvision state dict) or pretrained=False"
        )
    if pretrained:
        load_matching(net, load_state_dict_file(pretrained), source=str(pretrained))
    return net


# ----------------------------------------------------------------------------------------------- targets


def render_heatmap(cells: np.ndarray, channels: np.ndarray, num_channels: int, shape: tuple[int, int],
                   sigma: float, merge: str = "max") -> np.ndarray:
    """(num_channels, h, w) map with a Gaussian of height 1 and `sigma` cells at each (x, y) cell position,
    overlaps merged by maximum (as published) or by `merge="sum"`; each Gaussian is cut at 3 sigma."""
    heat = np.zeros((num_channels, *shape), np.float32)
    radius = math.ceil(3 * sigma)
    for (x, y), channel in zip(cells, channels, strict=True):
        x0, x1 = max(math.floor(x) - radius, 0), min(math.ceil(x) + radius + 1, shape[1])
        y0, y1 = max(math.floor(y) - radius, 0), min(math.ceil(y) + radius + 1, shape[0])
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sigma**2))
        window = heat[channel, y0:y1, x0:x1]
        if merge == "sum":
            window += np.outer(gy, gx)
        else:
            np.maximum(window, np.outer(gy, gx), out=window)
    return heat


@dataclass(frozen=True)
class HeatmapEncoder:
    """Points -> {"global": (4K, h, w) (level-major, C5 first), "refine": (K, h, w)} at stride 4."""

    num_keypoints: int
    global_sigmas: tuple[float, ...]  # in output cells, C5..C2
    refine_sigma: float
    merge: str = "max"  # how overlapping heads' Gaussians combine (render_heatmap)

    def __call__(self, points: np.ndarray, size: tuple[int, int], meta: dict) -> dict[str, Tensor]:
        shape = (-(-size[0] // OUTPUT_STRIDE), -(-size[1] // OUTPUT_STRIDE))
        cells = (np.asarray(points, np.float32).reshape(-1, 2) - PIXEL_CENTRE) / OUTPUT_STRIDE
        channels = self._channels(len(cells), meta)
        maps = [render_heatmap(cells, channels, self.num_keypoints, shape, s, self.merge)
                for s in (*self.global_sigmas, self.refine_sigma)]
        targets = {"global": torch.from_numpy(np.concatenate(maps[:-1])), "refine": torch.from_numpy(maps[-1])}
        if self.num_keypoints > 1:  # (K, 1, 1): which keypoint types this sample has (OHKM's valid units)
            labelled = torch.zeros(self.num_keypoints, 1, 1)
            labelled[torch.from_numpy(channels)] = 1
            targets["labelled"] = labelled
        return targets

    def _channels(self, n: int, meta: dict) -> np.ndarray:
        if self.num_keypoints == 1:
            return np.zeros(n, np.int64)
        if "labels" not in meta:
            raise ZooError(f"{meta.get('path', 'sample')}: cpn with {self.num_keypoints} keypoint types needs "
                           "meta['labels'] (the keypoint type of each annotation row)")
        channels = np.asarray(meta["labels"], np.int64)[np.asarray(meta["point_ids"], np.int64)]
        if channels.size and (channels.min() < 0 or channels.max() >= self.num_keypoints):
            raise ZooError(f"{meta.get('path', 'sample')}: keypoint labels outside 0..{self.num_keypoints - 1}")
        return channels


# ----------------------------------------------------------------------------------------------- loss


def hard_mining(losses: Tensor, valid: Tensor, fraction: float) -> Tensor:
    """OHKM: per row of (B, U) unit losses, the mean of the round(fraction * valid units) largest (at least one
    when any is valid), averaged over rows. Gradient reaches only the kept units."""
    n_valid = valid.sum(1)
    n_keep = torch.where(n_valid > 0, (n_valid * fraction).round().clamp(min=1), 0).long()
    top = losses.masked_fill(~valid, float("-inf")).topk(int(n_keep.max()), dim=1).values
    kept = torch.arange(top.shape[1], device=top.device)[None] < n_keep[:, None]
    return (top.where(kept, 0).sum(1) / n_keep.clamp(min=1)).mean()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the valid cells of (B, K, h, w) maps and all channels."""
    return ((pred - target) ** 2 * mask).sum() / (mask.sum() * pred.shape[1]).clamp(min=1)


# ----------------------------------------------------------------------------------------------- decoding


def find_peaks(heatmaps: Tensor, sizes: Tensor, threshold: float) -> list[tuple[np.ndarray, ...]]:
    """Per image, (points (M, 2) input pixels, scores (M,), channels (M,)) of the local maxima of (B, K, h, w)
    heatmaps above `threshold`: 3x3 maxima (one per flat top, `local_maxima`), then a quarter cell toward the
    higher neighbour on each axis (no shift on the border). Peaks on padding (outside `sizes`) are dropped."""
    heat = heatmaps.detach().float()
    peaks = local_maxima(heat) & (heat > threshold)
    shift_x = F.pad(torch.sign(heat[..., :, 2:] - heat[..., :, :-2]), (1, 1))
    shift_y = F.pad(torch.sign(heat[..., 2:, :] - heat[..., :-2, :]), (0, 0, 1, 1))
    found = []
    for b in range(heat.shape[0]):
        channel, row, col = peaks[b].nonzero(as_tuple=True)
        x = (col + 0.25 * shift_x[b, channel, row, col]) * OUTPUT_STRIDE + PIXEL_CENTRE
        y = (row + 0.25 * shift_y[b, channel, row, col]) * OUTPUT_STRIDE + PIXEL_CENTRE
        inside = (x < sizes[b, 1]) & (y < sizes[b, 0])
        points = torch.stack([x, y], 1)[inside]
        found.append((points.cpu().numpy(), heat[b, channel, row, col][inside].cpu().numpy(),
                      channel[inside].cpu().numpy()))
    return found


def keypoint_argmax(heatmaps: Tensor, sizes: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, ((K, 2) input pixels, (K,) scores): each channel's maximum over the real content, moved a
    quarter cell toward the higher of its two neighbours on each axis (none on the border or on a tie)."""
    found = []
    for heat, (height, width) in zip(heatmaps, sizes.tolist(), strict=True):
        heat = heat[:, : -(-height // OUTPUT_STRIDE), : -(-width // OUTPUT_STRIDE)]
        k, h, w = heat.shape
        scores, flat = heat.flatten(1).max(1)
        row, col = flat // w, flat % w
        channel = torch.arange(k, device=heat.device)
        right = heat[channel, row, (col + 1).clamp(max=w - 1)] - heat[channel, row, (col - 1).clamp(min=0)]
        down = heat[channel, (row + 1).clamp(max=h - 1), col] - heat[channel, (row - 1).clamp(min=0), col]
        inner_x, inner_y = (col > 0) & (col < w - 1), (row > 0) & (row < h - 1)
        x = col + 0.25 * torch.sign(right) * inner_x
        y = row + 0.25 * torch.sign(down) * inner_y
        points = torch.stack([x, y], 1) * OUTPUT_STRIDE + PIXEL_CENTRE
        found.append((points.cpu().numpy(), scores.cpu().numpy()))
    return found


def unmirror(heatmaps: Tensor, mirror: Tensor, input_width: int) -> Tensor:
    """Heatmaps of a mirrored input, back on the original's grid: flipped, channels swapped left <-> right, and
    resampled. Cell j is centred on input pixel 4 j, so in the mirror image it lands on (W - 1) / 4 - j; once the
    map is flipped, cell j holds the original's value at j + shift (0.75 cells for W = 192), interpolated back."""
    flipped = heatmaps.flip(-1)[:, mirror.to(heatmaps.device)]
    shift = (input_width - 1) / OUTPUT_STRIDE - (heatmaps.shape[-1] - 1)
    previous = torch.cat([flipped[..., :1], flipped[..., :-1]], -1)  # cell j - 1 (the border repeated)
    return (1 - shift) * flipped + shift * previous


# ----------------------------------------------------------------------------------------------- model


class CPN(CrowdModel):
    """CPN with a timm backbone. `sigma` is the RefineNet target width in output cells (default 0.75 for
    crowds, the published 1.4 for keypoints); GlobalNet targets are wider (`level_sigmas`).

    `flip_test` averages the crop's and its mirror image's heatmaps at evaluation (keypoint mode, 17 COCO types).
    `ohkm` toggles hard mining on RefineNet; `ohkm_fraction` is the share of units kept per sample
    (published: 8 of 17 keypoints). Units are keypoint channels when K > 1. With K = 1 they are
    non-overlapping `ohkm_cell` x `ohkm_cell` blocks of output cells (16x16 input pixels by default), so the
    loss concentrates on the regions where heads are missed, merged or hallucinated.

    `count` (crowd mode) says what the count is: "peaks", the number of heatmap peaks above the threshold, or
    "mass", the heatmap's sum over the image divided by the sum of one target Gaussian (its targets then add
    overlapping Gaussians instead of taking their maximum). Peaks merge heads closer than about two output cells
    (8 px), which dense scenes have many of; the mass still counts them."""

    stride = 32
    # The heatmap reaches 346 px (resnet18) / 342 px (resnet50) beyond a 32-aligned block: the farthest input pixel
    # with a nonzero gradient once every residual branch is live (timm zero-initializes their last BN, which
    # would hide them). + one 4 px output cell for the peaks' 3x3 window, rounded up to 32. Deeper backbones
    # reach further: measure them before tiling.
    receptive_context = 352

    def __init__(self, num_keypoints: int = 1, backbone: str = "resnet50",
                 pretrained: bool | str | os.PathLike = False, sigma: float | None = None, ohkm: bool = True,
                 ohkm_fraction: float = 8 / 17, ohkm_cell: int = 4, flip_test: bool = True, count: str = "peaks"):
        super().__init__()
        if count not in COUNTS:
            raise ZooError(f"cpn: count must be one of {', '.join(COUNTS)}, got {count!r}")
        self.num_keypoints = num_keypoints
        self.count = count
        self.count_is_sum = count == "mass" and num_keypoints == 1
        self.flip_test = flip_test
        # Which channel a keypoint type becomes in a mirrored image; known for COCO's 17 types.
        coco = num_keypoints == len(COCO_KEYPOINTS)
        self.mirror = torch.from_numpy(mirror_permutation(list(COCO_KEYPOINTS))) if coco else None
        self.refine_sigma = sigma or (CROWD_SIGMA if num_keypoints == 1 else POSE_SIGMAS[-1])
        self.global_sigmas = level_sigmas(self.refine_sigma)
        self.head_mass = target_mass(self.refine_sigma)
        self.ohkm, self.ohkm_fraction, self.ohkm_cell = ohkm, ohkm_fraction, ohkm_cell
        self.backbone = build_backbone(backbone, pretrained)
        self.global_net = GlobalNet(self.backbone.feature_info.channels()[::-1], num_keypoints)
        self.refine_net = RefineNet(num_keypoints)
        for module in (self.global_net, self.refine_net):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        outputs = self.heatmaps(images)
        if not self.training and self.flip_test and self.mirror is not None:
            mirrored = self.heatmaps(images.flip(-1))["refine"]
            outputs["refine"] = (outputs["refine"] + unmirror(mirrored, self.mirror, images.shape[-1])) / 2
        return outputs

    def heatmaps(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        features = self.backbone(images)[::-1]
        size = tuple(features[-1].shape[-2:])  # C2 is the stride-4 grid: ceil(H / 4) x ceil(W / 4)
        pyramid, global_maps = self.global_net(features, size)
        return {"global": global_maps, "refine": self.refine_net(pyramid, size)}

    def target_encoder(self) -> HeatmapEncoder:
        # A count from the mass needs every head's whole Gaussian in the target: overlaps add up
        return HeatmapEncoder(self.num_keypoints, self.global_sigmas, self.refine_sigma,
                              "sum" if self.count == "mass" else "max")

    def loss(self, outputs: dict, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        mask = batch.valid_mask(OUTPUT_STRIDE)
        global_targets = batch.targets["global"].float().unflatten(1, (len(outputs["global"]), -1))
        global_loss = GLOBAL_WEIGHT * sum(
            masked_mse(pred.float(), global_targets[:, i], mask) for i, pred in enumerate(outputs["global"])
        )
        refine_loss = self._refine_loss(outputs["refine"].float(), batch.targets["refine"].float(), mask,
                                        batch.targets.get("labelled"))
        return global_loss + refine_loss, {"global": global_loss.detach(), "refine": refine_loss.detach()}

    def _refine_loss(self, pred: Tensor, target: Tensor, mask: Tensor, labelled: Tensor | None) -> Tensor:
        if not self.ohkm:
            return masked_mse(pred, target, mask)
        error = (pred - target) ** 2 * mask
        if self.num_keypoints > 1:  # units are the keypoint channels the sample has a label for
            losses = error.sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)
            valid = labelled.flatten(1) > 0
        else:  # units are blocks of cells; partial blocks (borders, padding) average their valid cells only
            error_sum = F.avg_pool2d(error, self.ohkm_cell, ceil_mode=True).flatten(1)
            cell_count = F.avg_pool2d(mask, self.ohkm_cell, ceil_mode=True).flatten(1)
            losses, valid = error_sum / cell_count.clamp(min=1e-12), cell_count > 0
        return hard_mining(losses, valid, self.ohkm_fraction)

    def decode(self, outputs: dict, sizes: Tensor, threshold: float) -> list[Prediction]:
        heat = outputs["refine"].detach().float()
        if self.num_keypoints > 1:
            return [Prediction(count=float(self.num_keypoints), points=points, scores=scores,
                               dense_map=dense.amax(0).cpu().numpy(), map_stride=OUTPUT_STRIDE)
                    for (points, scores), dense in zip(keypoint_argmax(heat, sizes), heat, strict=True)]
        overlay = heat.amax(1)  # crowd mode: the one channel; keypoint mode: all types in one view
        predictions = []
        for (points, scores, _), size, dense in zip(find_peaks(heat, sizes, threshold), sizes, overlay, strict=True):
            h, w = (-(-int(s) // OUTPUT_STRIDE) for s in size)
            dense = dense[:h, :w]
            if self.count == "mass":  # the map, in heads per cell, integrates to the count (GAME sums its regions)
                dense = dense.clamp(min=0) * (self.count_scale / self.head_mass)
                count = float(dense.sum())
            else:
                count = float(len(points))
            predictions.append(Prediction(count=count, points=points, scores=scores, dense_map=dense.cpu().numpy(),
                                          map_stride=OUTPUT_STRIDE, map_is_density=self.count == "mass"))
        return predictions


# ----------------------------------------------------------------------------------------------- builders
# (registered, with their recipes, in zoo/models/catalog.py)


def cpn(pretrained: bool | str | os.PathLike = False, **overrides) -> CPN:
    """CPN: ResNet-50 + GlobalNet + RefineNet heatmaps at stride 4, L2 + OHKM."""
    return CPN(pretrained=pretrained, **checked_options("cpn", CPN, overrides))


def cpn_r18(pretrained: bool | str | os.PathLike = False, **overrides) -> CPN:
    """CPN on ResNet-18: the CPU-friendly variant (a lighter trunk; the stride-4 neck it keeps limits the saving
    at small crops)."""
    return CPN(pretrained=pretrained, **checked_options("cpn_r18", CPN, {"backbone": "resnet18", **overrides}))
