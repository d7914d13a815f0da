"""CSRNet (Li et al., CVPR 2018): a VGG-16 frontend and a dilated backend regressing a density map at stride 8.

Count = integral of the density. Points for localization metrics are the density's local maxima: approximate,
since a density map does not say where each head is when heads overlap.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.core.errors import ZooError
from zoo.core.types import Batch, Prediction
from zoo.models.base import CrowdModel, checked_options
from zoo.models.density import DensityEncoder, DensityParams
from zoo.models.peaks import local_maxima
from zoo.models.vgg import POOL_INDICES, VGGTrunk
from zoo.models.weights.published import Converted, has_prefix, rename

# Backend configurations of the paper (Table 3).
DILATIONS = {"A": (1,) * 6, "B": (2,) * 6, "C": (2, 2, 2, 4, 4, 4), "D": (4,) * 6}
BACKEND_CHANNELS = (512, 512, 512, 256, 128, 64)
# VGG-16 up to conv4_3 sees 92 px around an 8 px output cell: it reaches (92 - 8) / 2 px beyond the cell.
FRONTEND_REACH = 42


class CSRNet(CrowdModel):
    """`batch_norm=False` (registered as `csrnet`) is the paper's plain VGG-16 frontend (`features[0:23]`, loads
    `vgg16` weights) and the architecture of the published checkpoints; `batch_norm=True` (`csrnet_bn`) uses
    `vgg16_bn` up to the same pool (`features[0:33]`) and BN in the backend too. Trained from scratch, as here,
    BN counts about as well and localizes far better, so the zoo's runs use `csrnet_bn`.

    The network predicts `density_scale` x the density. Targets are heads per 8x8 cell, already 64x the
    per-pixel density whose tiny values stall the published code's SGD, so the default factor is 1: Adam
    normalizes gradient size, and a larger factor only makes the output grow further from its near-zero start
    (larger factors trained worse wherever they were tried). Raise it for SGD.
    """

    stride = 8
    count_is_sum = True

    def __init__(self, dilation: str = "B", batch_norm: bool = False, pretrained=False, sigma_mode: str = "adaptive",
                 sigma: float = 4.0, density_scale: float = 1.0):
        super().__init__()
        if dilation not in DILATIONS:
            raise ZooError(f"csrnet: unknown dilation schedule {dilation!r}; choose one of {', '.join(DILATIONS)}")
        if not isinstance(batch_norm, bool):
            raise ZooError(f"csrnet: batch_norm must be True or False, got {batch_norm!r}")
        if density_scale <= 0:
            raise ZooError(f"csrnet: density_scale must be > 0, got {density_scale}")
        end = POOL_INDICES[batch_norm][3]  # just before the fourth pool: three pools, stride 8, 512 channels
        self.backbone = VGGTrunk(end=end, taps=(end - 1,), batch_norm=batch_norm, pretrained=pretrained)
        layers, channels = [], 512
        for out, rate in zip(BACKEND_CHANNELS, DILATIONS[dilation], strict=True):
            layers.append(nn.Conv2d(channels, out, 3, padding=rate, dilation=rate))
            layers += [nn.BatchNorm2d(out)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.backend = nn.Sequential(*layers)
        # Each backend 3x3 convolution of dilation r reaches r cells further; one more cell for the 3x3 maxima.
        # Reaches 90 / 138 / 234 px for A / B / D, as measured by the farthest input pixel with a nonzero gradient.
        reach = FRONTEND_REACH + self.stride * sum(DILATIONS[dilation])
        self.receptive_context = -(-(reach + self.stride) // self.stride) * self.stride
        self.output = nn.Conv2d(channels, 1, 1)
        self.density_params = DensityParams(sigma_mode=sigma_mode, sigma=sigma)
        self.density_scale = float(density_scale)
        self._init_head()

    def _init_head(self) -> None:
        for m in self.backend.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # A small output layer starts near the all-zero map instead of a large random count.
        nn.init.normal_(self.output.weight, std=0.01)
        nn.init.zeros_(self.output.bias)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        (features,) = self.backbone(images)
        return {"density": self.output(self.backend(features))}

    def target_encoder(self) -> DensityEncoder:
        return DensityEncoder(self.density_params, self.stride)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean (over valid cells of the batch) squared error on the scaled density, in float32.

        A mean rather than the published code's sum keeps the loss scale independent of crop and batch size.
        """
        mask = batch.valid_mask(self.stride)
        error = outputs["density"].float() - batch.targets["density"].float() * self.density_scale
        mse = (error.square() * mask).sum() / mask.sum().clamp(min=1.0)
        return mse, {"mse": mse.detach()}

    def decode(self, outputs: dict[str, Tensor], sizes: Tensor, threshold: float) -> list[Prediction]:
        """Count = sum of the density over the cells holding real content; points = those cells that are 3x3
        local maxima (one per flat top) with density > `threshold` (heads per cell), placed at the cell centre.
        Approximate: heads closer than a few cells merge into one maximum.

        The output layer is unbounded, so cells can come out negative (an undertrained model's sum can be a
        negative count). Negative cells are set to 0 before anything else: no region ever holds fewer than 0
        people, so the count, the GAME regions summed from the map and the overlay all stay >= 0 and agree."""
        density = outputs["density"].float().clamp(min=0) * (self.count_scale / self.density_scale)
        predictions = []
        for d, (h, w) in zip(density, sizes.tolist(), strict=True):
            cells = d[:, : -(-h // self.stride), : -(-w // self.stride)]  # (1, ceil(h/8), ceil(w/8))
            peaks = local_maxima(cells) & (cells > threshold)
            ys, xs = torch.nonzero(peaks[0], as_tuple=True)
            points = (torch.stack([xs, ys], 1).float() + 0.5) * self.stride
            predictions.append(Prediction(
                count=float(cells.sum()), points=points.cpu().numpy().reshape(-1, 2),
                scores=cells[0, ys, xs].cpu().numpy(), dense_map=cells[0].cpu().numpy(), map_stride=self.stride,
                map_is_density=True))
        return predictions


# ---- published checkpoints -----------------------------------------------------------------------------------

PUBLISHED_KEYS = ("frontend.0.weight", "backend.0.weight", "output_layer.weight")
PUBLISHED_PREPROCESSING = (
    "ImageNet mean/std normalization on the full image, as in the zoo (CSRNet-pytorch's val.ipynb normalizes "
    "differently, a known source of wrong counts); the zoo pads to a multiple of 8, which adds only zero cells")


def from_published(weights: dict[str, Tensor]) -> Converted | None:
    """CSRNet-pytorch's layout (`frontend.N`, `backend.N`, `output_layer`), also used by lwcc and C-3-Framework.

    `frontend` is torchvision's VGG-16 `features[:23]` with the same indices (`[:33]` with BN), the backend the
    paper's configuration B (dilation 2). Its targets are heads per 8x8 cell, as the zoo's, so the output is
    taken as is (density_scale 1).
    """
    if not has_prefix(weights, "frontend.", "backend.", "output_layer."):
        return None
    state, origin = rename(weights, [
        (r"frontend\.(\d+)\.(.+)", lambda m: f"backbone.features.{m[1]}.{m[2]}"),
        (r"backend\.(\d+)\.(.+)", lambda m: f"backend.{m[1]}.{m[2]}"),
        (r"output_layer\.(.+)", lambda m: f"output.{m[1]}"),
    ], "CSRNet-pytorch")
    options = {"batch_norm": "backbone.features.1.running_mean" in state, "dilation": "B", "density_scale": 1.0}
    layout = f"CSRNet-pytorch ({'VGG-16 with batch norm' if options['batch_norm'] else 'VGG-16'})"
    return Converted(state, options, layout, PUBLISHED_PREPROCESSING, origin)


#: batch norm of each registered variant
VARIANTS = {"csrnet": False, "csrnet_bn": True}


def implied_options(state: dict[str, Tensor], name: str) -> dict:
    """Options a zoo state dict fixes by its keys that variant `name` would not have: batch norm (zoo runs before
    the `csrnet_bn` name saved BN weights as `csrnet`)."""
    batch_norm = "backbone.features.1.running_mean" in state
    return {} if batch_norm == VARIANTS[name] else {"batch_norm": batch_norm}


def csrnet(pretrained=False, **overrides) -> CSRNet:
    """Options: dilation "A".."D" (default "B"), batch_norm, sigma_mode "adaptive"/"fixed", sigma, density_scale."""
    return CSRNet(pretrained=pretrained, **checked_options("csrnet", CSRNet, overrides))


def csrnet_bn(pretrained=False, **overrides) -> CSRNet:
    """As `csrnet`, with batch_norm=True by default."""
    return CSRNet(pretrained=pretrained, **checked_options("csrnet_bn", CSRNet, {"batch_norm": True, **overrides}))
