"""VGG-16 feature extractors with torchvision's layer names (`features.N`), so ImageNet weights load as is.

P2PNet and CSRNet both start from a truncated `vgg16` / `vgg16_bn`. Only the convolutional trunk is built:
the 120M-parameter classifier is never allocated.
"""

from __future__ import annotations

import os

from torch import nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from zoo.models.pretrained import load_matching, resolve_torchvision_weights

# Index of the first layer after each max-pool in torchvision's features Sequential (plain, with BN).
# Plain vgg16: pools at 4, 9, 16, 23, 30. vgg16_bn: pools at 6, 13, 23, 33, 43.
POOL_INDICES = {False: (4, 9, 16, 23, 30), True: (6, 13, 23, 33, 43)}


class VGGTrunk(nn.Module):
    """`features[:end]` of torchvision's VGG-16 (with or without BN); forward returns the outputs at `taps`.

    `taps` are indices into the Sequential after which an output is taken (e.g. the layer just before a
    pool), so callers can ask for C4 and C5 by torchvision index.
    """

    def __init__(self, end: int, taps: tuple[int, ...], batch_norm: bool = False,
                 pretrained: bool | str | os.PathLike = False):
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=batch_norm)[:end]
        self.taps = tuple(taps)
        self.batch_norm = batch_norm
        weights = VGG16_BN_Weights.IMAGENET1K_V1 if batch_norm else VGG16_Weights.IMAGENET1K_V1
        state = resolve_torchvision_weights(pretrained, weights)
        if state is not None:
            load_matching(self, state, source=str(pretrained if pretrained is not True else weights))
        else:
            self._init_from_scratch()

    def _init_from_scratch(self) -> None:
        # He init for ReLU convs: VGG without pretrained weights trains from scratch only with a sane init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs
