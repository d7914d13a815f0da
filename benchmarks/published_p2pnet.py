"""The published P2PNet code timed by `zoo bench` beside the zoo's P2PNet, with the same weights on the same input.

The published network is imported from a checkout of TencentYoutuResearch/CrowdCounting-P2PNet that lives outside
this repository (nothing of it is copied here), named by $P2PNET_PUBLISHED. This module registers it as the zoo
model `p2pnet_published`: its forward pass is the published one (backbone, the whole FPN decoder, both heads,
anchors computed per call), with the 2-class softmax turned into the zoo's single logit z1 - z0 only so that the
zoo's decoding counts its proposals. Its weights are seeded random ones (ImageNet weights cannot be downloaded
here); the same state dict, converted by `zoo convert`'s code, is loaded into the zoo's P2PNet, so both count the
same proposals and their speed is compared at equal work.

    git clone https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet /somewhere/p2pnet   # outside the repo
    P2PNET_PUBLISHED=/somewhere/p2pnet python -m benchmarks.published_p2pnet [--iters 5] [--out results/bench.csv]

It runs `zoo bench` on both models at 768x1024, batch 1, in fp32 and in bf16 autocast + channels_last (the
published code under the settings the issue quotes), and appends the rows to results/bench.csv.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from zoo.errors import ZooError
from zoo.models.base import CrowdModel
from zoo.models.catalog import P2PNET
from zoo.models.p2pnet import P2PNet
from zoo.registry import list_models, register_model

NAME = "p2pnet_published"


def _published_modules():
    """The checkout's `models.p2pnet` and `models.backbone`, imported from $P2PNET_PUBLISHED."""
    root = os.environ.get("P2PNET_PUBLISHED")
    if not root or not (Path(root) / "models" / "p2pnet.py").is_file():
        raise ZooError(f"P2PNET_PUBLISHED={root!r}: set it to a checkout of CrowdCounting-P2PNet (models/p2pnet.py)")
    sys.path.insert(0, root)
    import torchvision

    # Its util/misc.py compares float(torchvision.__version__[:3]) with 0.7, which reads "0.29" as 0.2 and then
    # imports a helper that torchvision no longer has; the version string is raised for the import only.
    version, torchvision.__version__ = torchvision.__version__, "9.9"
    try:
        import models.backbone as backbone
        import models.p2pnet as p2pnet
    finally:
        torchvision.__version__ = version
    return p2pnet, backbone


class PublishedP2PNet(CrowdModel):
    """The published forward pass; outputs in the zoo's P2PNet format, decoded by the zoo's P2PNet decoding."""

    stride = 16

    def __init__(self):
        super().__init__()
        p2pnet, backbone = _published_modules()
        vgg = backbone.models.vgg16_bn(pretrained=False)  # the published builder asks for ImageNet weights
        self.net = p2pnet.P2PNet(backbone.BackboneBase_VGG(vgg, 256, "vgg16_bn", True), row=2, line=2)
        self.threshold = P2PNET.threshold

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        out = self.net(images)
        logits = out["pred_logits"].float()
        anchors = self.net.anchor_points(images).to(images.device)
        return {"points": out["pred_points"].float(), "logits": logits[..., 1] - logits[..., 0],
                "anchors": anchors.expand(len(images), -1, -1)}

    valid_proposals = staticmethod(P2PNet.valid_proposals)
    decode = P2PNet.decode


def build(pretrained: bool = False) -> PublishedP2PNet:
    return PublishedP2PNet()


def register() -> None:
    if NAME not in list_models():
        # by module path, not __name__ (which is __main__ under -m): the bench's worker processes import it
        register_model(NAME, builder="benchmarks.published_p2pnet:build", recipe=P2PNET, family="points",
                       description="the published CrowdCounting-P2PNet code ($P2PNET_PUBLISHED), for timing")


def shared_weights(folder: Path) -> Path:
    """The published model's seeded weights (as `zoo bench` seeds every model) saved in the published layout."""
    from zoo.bench.measure import SEED

    torch.manual_seed(SEED)
    path = folder / "p2pnet_published_seeded.pth"
    torch.save({"model": build().net.state_dict()}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    from zoo.bench.config import BenchConfig, parse_resolution
    from zoo.bench.run import run_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--resolution", type=parse_resolution, default=(768, 1024), help="HEIGHTxWIDTH")
    parser.add_argument("--out", type=Path, default=Path("results/bench.csv"))
    args = parser.parse_args(argv)
    register()
    with tempfile.TemporaryDirectory() as folder:
        weights = shared_weights(Path(folder))
        cfg = BenchConfig(models=[NAME, "p2pnet"], resolution=args.resolution, dtypes=("bf16",), channels_last=True,
                          fp32_reference=True, iters=args.iters, train_step=False, weights={"p2pnet": str(weights)},
                          data=None, out=args.out)
        run_bench(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
