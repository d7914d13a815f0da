"""The published P2PNet and CSRNet code timed by `zoo bench` beside the zoo's models, same weights, same input.

Each published network is imported from a checkout outside this repository (nothing of it is copied here):
$P2PNET_PUBLISHED names one of TencentYoutuResearch/CrowdCounting-P2PNet, $CSRNET_PUBLISHED one of
leeyeehoo/CSRNet-pytorch. This module registers them as the zoo models `p2pnet_published` and `csrnet_published`:
their forward passes are the published ones (P2PNet: backbone, the whole FPN decoder, both heads, anchors computed
per call; its 2-class softmax becomes the zoo's single logit z1 - z0 only so that the zoo's decoding counts its
proposals). Their weights are seeded random ones (ImageNet weights cannot be downloaded here); the same state
dict, converted by `zoo convert`'s code, is loaded into the zoo's model, so both count the same heads and their
speed is compared at equal work.

    git clone https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet /somewhere/p2pnet   # outside the repo
    git clone https://github.com/leeyeehoo/CSRNet-pytorch /somewhere/csrnet
    P2PNET_PUBLISHED=/somewhere/p2pnet CSRNET_PUBLISHED=/somewhere/csrnet python -m benchmarks.published_speed

It runs `zoo bench` on each published model and its zoo counterpart (p2pnet, csrnet) at 768x1024, batch 1, in
fp32 and in bf16 autocast + channels_last, then the zoo model alone compiled (bf16 and fp32, channels_last) and on
onnxruntime (fp32, and int8 calibrated on the synthetic training images), each run with its own fp32 reference row,
and appends every row to results/bench.csv.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from zoo.core.errors import ZooError
from zoo.models.base import CrowdModel
from zoo.models.catalog import CSRNET, P2PNET
from zoo.models.families.csrnet import CSRNet
from zoo.models.families.p2pnet import P2PNet
from zoo.models.registry import list_models, register_model


@contextmanager
def published_checkout(variable: str, marker: str):
    """sys.path with the checkout named by $`variable` (which must hold `marker`) in front, for its imports."""
    root = os.environ.get(variable)
    if not root or not (Path(root) / marker).is_file():
        raise ZooError(f"{variable}={root!r}: set it to the published checkout (it must hold {marker})")
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)


class PublishedP2PNet(CrowdModel):
    """The published P2PNet forward pass; outputs in the zoo's P2PNet format, decoded by the zoo's decoding."""

    stride = 16

    def __init__(self):
        super().__init__()
        with published_checkout("P2PNET_PUBLISHED", "models/p2pnet.py"):
            import torchvision

            # Its util/misc.py compares float(torchvision.__version__[:3]) with 0.7, which reads "0.29" as 0.2 and
            # then imports a helper torchvision no longer has; the version string is raised for the import only.
            version, torchvision.__version__ = torchvision.__version__, "9.9"
            try:
                import models.backbone as backbone
                import models.p2pnet as p2pnet
            finally:
                torchvision.__version__ = version
        vgg = backbone.models.vgg16_bn(pretrained=False)  # its own builder would ask for ImageNet weights
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


class PublishedCSRNet(CrowdModel):
    """The published CSRNet forward pass (VGG-16 frontend, dilated backend, 1x1 output), decoded by the zoo."""

    stride = 8
    density_scale = 1.0  # its targets are heads per cell, as the zoo's

    def __init__(self):
        super().__init__()
        with published_checkout("CSRNET_PUBLISHED", "model.py"):
            import model as csrnet

        # load_weights=True skips its ImageNet copy (Python 2 code); its own initialization is then applied.
        self.net = csrnet.CSRNet(load_weights=True)
        self.net._initialize_weights()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"density": self.net(images)}

    decode = CSRNet.decode


def p2pnet_published(pretrained: bool = False) -> PublishedP2PNet:
    return PublishedP2PNet()


def csrnet_published(pretrained: bool = False) -> PublishedCSRNet:
    return PublishedCSRNet()


#: published model -> (its zoo counterpart, recipe, family, the published checkpoint's layout of its weights)
PAIRS = {
    "p2pnet_published": ("p2pnet", P2PNET, "points", lambda net: {"model": net.state_dict()}),
    "csrnet_published": ("csrnet", CSRNET, "density", lambda net: {"state_dict": net.state_dict(), "epoch": 0}),
}


def register() -> None:
    for name, (_, recipe, family, _) in PAIRS.items():
        if name not in list_models():
            # by module path, not __name__ (which is __main__ under -m): the bench's worker processes import it
            register_model(name, builder=f"benchmarks.published_speed:{name}", recipe=recipe, family=family,
                           description="the published code (a checkout outside the repo), for timing")


def shared_weights(name: str, folder: Path) -> Path:
    """The published model's seeded weights (seeded as `zoo bench` seeds every model), in its published layout."""
    from zoo.bench.measure import SEED
    from zoo.models.factory import create_model

    torch.manual_seed(SEED)
    path = folder / f"{name}_seeded.pth"
    torch.save(PAIRS[name][3](create_model(name).net), path)
    return path


# ---- paired timing: every variant once per round, in one process ------------------------------------------------
# On a shared or virtual CPU the throughput of the same product drifts by 2-3x within seconds (measured here: a
# bf16 matmul between 540 and 1780 GFLOP/s over 40 s), so rows timed one process after another compare moments,
# not code. Rounds that run every variant once, in rotated order, see the same drift; the ratios are per round.

PAIRED_COLUMNS = ["date", "git_commit", "device_name", "cpu_threads", "torch", "onnxruntime", "model", "code",
                  "runtime", "dtype", "channels_last", "compile", "resolution", "rounds", "median_ms", "p10_ms",
                  "p90_ms", "count", "speedup_vs_published_fp32", "speedup_vs_published_same_setting"]


@dataclass(frozen=True)
class Variant:
    code: str  # "published" or "zoo"
    runtime: str = "torch"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def setting(self) -> tuple:
        return self.dtype, self.channels_last, self.compile


VARIANTS = [Variant("published"), Variant("published", dtype="bf16", channels_last=True), Variant("zoo"),
            Variant("zoo", dtype="bf16", channels_last=True),
            Variant("zoo", dtype="bf16", channels_last=True, compile=True),
            Variant("zoo", runtime="onnxruntime"), Variant("zoo", runtime="onnxruntime", dtype="int8")]


def paired_runners(name: str, folder: Path, resolution: tuple[int, int]) -> dict[Variant, tuple]:
    """Each variant's (forward callable, decoding model, input) on the same seeded weights."""
    import torch._inductor.config as inductor

    from zoo.bench.measure import bench_images
    from zoo.deploy.export import export_onnx
    from zoo.deploy.fold import prepare_for_inference
    from zoo.deploy.quantize import quantize_on_training_images
    from zoo.deploy.runtime import OnnxRunner
    from zoo.models.factory import create_model

    weights = shared_weights(name, folder)
    torch.manual_seed(0)
    published = create_model(name).eval()
    zoo = prepare_for_inference(create_model(PAIRS[name][0], checkpoint_path=weights))
    export_onnx(zoo, folder / "fp32.onnx", threshold=PAIRS[name][1].threshold)
    quantize_on_training_images(folder / "fp32.onnx", folder / "int8.onnx", "synthetic", zoo.stride)
    image = bench_images(resolution, 1)
    last = image.contiguous(memory_format=torch.channels_last)
    published_last = copy.deepcopy(published).to(memory_format=torch.channels_last)
    zoo_last = copy.deepcopy(zoo).to(memory_format=torch.channels_last)
    inductor.freezing = True  # as zoo bench --compile: weights prepacked once
    runners = {}
    for variant in VARIANTS:
        if variant.runtime == "onnxruntime":
            runners[variant] = (OnnxRunner(folder / f"{variant.dtype}.onnx"), zoo, image)
            continue
        model = {("published", False): published, ("published", True): published_last, ("zoo", False): zoo,
                 ("zoo", True): zoo_last}[variant.code, variant.channels_last]
        runners[variant] = (torch.compile(model) if variant.compile else model, model,
                            last if variant.channels_last else image)
    return runners


@torch.no_grad()
def paired_timing(name: str, rounds: int, resolution: tuple[int, int]) -> list[dict]:
    import numpy as np

    from zoo.core.precision import autocast
    from zoo.core.provenance import environment

    with tempfile.TemporaryDirectory() as folder:
        runners = paired_runners(name, Path(folder), resolution)
        seconds = {v: [] for v in runners}
        counts = {}
        sizes = torch.tensor([resolution])
        for r in range(rounds + 1):  # round 0 warms up (and compiles)
            order = list(runners)[r % len(runners):] + list(runners)[: r % len(runners)]
            for variant in order:
                forward, model, images = runners[variant]
                with autocast("cpu", "bf16" if variant.dtype == "bf16" else "off"):
                    start = time.perf_counter()
                    outputs = forward(images)
                    elapsed = time.perf_counter() - start
                if r:
                    seconds[variant].append(elapsed)
                counts[variant] = model.decode(outputs, sizes, PAIRS[name][1].threshold)[0].count
    import onnxruntime

    env = environment(torch.device("cpu"))
    base = seconds[VARIANTS[0]]
    same = {v.setting: seconds[v] for v in VARIANTS if v.code == "published"}
    rows = []
    for variant, times in seconds.items():
        times = np.array(times)
        reference = same.get(variant.setting) if variant.runtime == "torch" and not variant.compile else None
        rows.append({**env, "onnxruntime": onnxruntime.__version__, "model": PAIRS[name][0], "code": variant.code,
                     "runtime": variant.runtime, "dtype": variant.dtype, "channels_last": variant.channels_last,
                     "compile": variant.compile, "resolution": f"{resolution[0]}x{resolution[1]}", "rounds": rounds,
                     "median_ms": 1e3 * np.median(times), "p10_ms": 1e3 * np.percentile(times, 10),
                     "p90_ms": 1e3 * np.percentile(times, 90), "count": counts[variant],
                     "speedup_vs_published_fp32": float(np.median(np.array(base) / times)),
                     "speedup_vs_published_same_setting":
                         None if reference is None else float(np.median(np.array(reference) / times))})
    return rows


def main(argv: list[str] | None = None) -> int:
    from zoo.bench.config import BenchConfig, parse_list, parse_resolution
    from zoo.bench.run import run_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(PAIRS), help="published models to time (with their zoo pair)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--resolution", type=parse_resolution, default=(768, 1024), help="HEIGHTxWIDTH")
    parser.add_argument("--out", type=Path, default=Path("results/bench.csv"))
    parser.add_argument("--paired", type=int, metavar="ROUNDS",
                        help="instead: time every variant once per round in one process (see PAIRED_COLUMNS), "
                             "appending to results/published_speed.csv")
    args = parser.parse_args(argv)
    register()
    for name in parse_list(args.models, "--models"):
        if name not in PAIRS:
            raise SystemExit(f"--models: {name!r} is not one of {', '.join(PAIRS)}")
        if args.paired:
            from zoo.core.csvrows import append_rows

            rows = paired_timing(name, args.paired, args.resolution)
            for row in rows:
                print(" ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                               for k in ("model", "code", "runtime", "dtype", "channels_last", "compile",
                                         "median_ms", "count", "speedup_vs_published_fp32",
                                         "speedup_vs_published_same_setting")), flush=True)
            append_rows(Path("results/published_speed.csv"), rows, PAIRED_COLUMNS, schema="PAIRED_COLUMNS",
                        remedy="move the file aside")
            continue
        with tempfile.TemporaryDirectory() as folder:
            zoo_model = PAIRS[name][0]
            weights = {zoo_model: str(shared_weights(name, Path(folder)))}
            common = dict(resolution=args.resolution, fp32_reference=True, iters=args.iters, train_step=False,
                          weights=weights, data=None, out=args.out)
            # both codes under the same settings: plain fp32, and bf16 autocast + channels_last
            run_bench(BenchConfig(models=[name, zoo_model], dtypes=("bf16",), channels_last=True, **common))
            # the zoo's other paths on the same weights: compiled (weights frozen), onnxruntime fp32 and int8
            run_bench(BenchConfig(models=[zoo_model], dtypes=("bf16", "fp32", "int8"), channels_last=True,
                                  compile=True, runtimes=("torch", "onnxruntime"), **common))
    return 0


if __name__ == "__main__":
    sys.exit(main())
