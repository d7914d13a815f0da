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

With `--paired ROUNDS` it times every path of a model in one process instead, one pass of each per round (VARIANTS:
the published code in fp32 and bf16 + channels_last; the zoo's eager, compiled, onnxruntime and OpenVINO paths),
and appends to results/published_speed_v2.csv (PAIRED_COLUMNS_V2). `cpn` is timed there alone (ZOO_ONLY): its
published code has no inference that runs here. A run first records the load and the busiest other processes and
measures the fp32, bf16 and int8 ceilings (zoo.bench.ceiling); each row gives its FLOPs per image against its
dtype's ceiling.
A variant whose runtime is missing, that the CPU cannot run, or that fails is a row with a status and a note.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.machine import busy_processes, is_loaded, load_1m
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


#: published model -> the variable naming its checkout and a file that checkout must hold
CHECKOUTS = {"p2pnet_published": ("P2PNET_PUBLISHED", "models/p2pnet.py"),
             "csrnet_published": ("CSRNET_PUBLISHED", "model.py")}


def check_checkout(name: str) -> None:
    """A one-line ZooError now, before minutes of ceilings, where the published model's checkout is not given."""
    with published_checkout(*CHECKOUTS[name]):
        pass


class PublishedP2PNet(CrowdModel):
    """The published P2PNet forward pass; outputs in the zoo's P2PNet format, decoded by the zoo's decoding."""

    stride = 16

    def __init__(self):
        super().__init__()
        with published_checkout(*CHECKOUTS["p2pnet_published"]):
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
        with published_checkout(*CHECKOUTS["csrnet_published"]):
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
# On a shared or virtual CPU the throughput of the same product drifts by 2-3x within seconds, so rows timed one
# process after another compare moments, not code. Rounds that run every variant once, in rotated order, see the
# same drift; the ratios are per round.

#: the header of results/published_speed.csv, whose rows were written before the v2 columns (kept as written)
PAIRED_COLUMNS = ["date", "git_commit", "device_name", "cpu_threads", "torch", "onnxruntime", "model", "code",
                  "runtime", "dtype", "channels_last", "compile", "resolution", "rounds", "median_ms", "p10_ms",
                  "p90_ms", "count", "speedup_vs_published_fp32", "speedup_vs_published_same_setting"]
#: the header of results/published_speed_v2.csv, which `--paired` appends to
PAIRED_COLUMNS_V2 = [
    # the run and the machine
    "run", "date", "git_commit", "device_name", "cpu_threads", "torch", "onnxruntime", "openvino", "run_load_1m",
    "run_busy_processes", "load_1m", "busy_processes", "loaded",
    # what ran
    "model", "code", "runtime", "dtype", "channels_last", "compile", "resolution", "rounds", "status",
    # speed
    "median_ms", "p10_ms", "p90_ms", "count", "gflops_per_image", "achieved_gflops_per_s", "ceiling_gflops_per_s",
    "ceiling_instructions", "ceiling_fraction", "speedup_vs_published_fp32", "speedup_vs_published_same_setting",
    "note"]
PAIRED_OUT = Path("results/published_speed_v2.csv")
#: zoo models timed on their own: no published inference code of theirs runs here (model -> the rows' note)
ZOO_ONLY = {"cpn": "published CPN has no inference code that runs here: zoo rows only, no speedups"}
CEILING_DTYPES = ("fp32", "bf16", "int8")


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


#: the zoo's default inference path (eager bf16 autocast with channels_last), the README's middle column
ZOO_DEFAULT = Variant("zoo", dtype="bf16", channels_last=True)
VARIANTS = [Variant("published"), Variant("published", dtype="bf16", channels_last=True), Variant("zoo"),
            ZOO_DEFAULT, Variant("zoo", dtype="bf16", channels_last=True, compile=True),
            Variant("zoo", channels_last=True, compile=True),
            Variant("zoo", runtime="onnxruntime"), Variant("zoo", runtime="onnxruntime", dtype="int8"),
            Variant("zoo", runtime="openvino"), Variant("zoo", runtime="openvino", dtype="bf16"),
            Variant("zoo", runtime="openvino", dtype="int8")]


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def missing_packages(variant: Variant) -> list[str]:
    """The packages a variant needs that are not installed: an exported one needs onnx (export), its runtime, and
    for int8 onnxruntime (the calibration of the QDQ file both runtimes read)."""
    if variant.runtime == "torch":
        return []
    needed = ["onnx", variant.runtime, *(["onnxruntime"] if variant.dtype == "int8" else [])]
    return [package for package in dict.fromkeys(needed) if not installed(package)]


@dataclass
class Timed:
    """A variant in the rounds: what it calls, the model that decodes its outputs and its input; or why it has
    none (`status` other than ok, `note`)."""

    variant: Variant
    forward: object = None
    model: CrowdModel | None = None
    images: Tensor | None = None
    status: str = "ok"
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    count: float | None = None

    def fail(self, status: str, exc: BaseException) -> None:
        from zoo.bench.measure import first_line

        self.status, self.note = status, f"{type(exc).__name__}: {first_line(exc)}"
        self.forward, self.seconds = None, []


def zoo_counterpart(name: str) -> str:
    return PAIRS[name][0] if name in PAIRS else name


class Exports:
    """The zoo model's ONNX files, written when a variant first asks: fp32, and int8 quantized from it (the one
    QDQ file onnxruntime and OpenVINO both run)."""

    def __init__(self, model: CrowdModel, threshold: float, folder: Path):
        self.model, self.threshold, self.folder = model, threshold, folder

    def path(self, dtype: str) -> Path:
        from zoo.deploy.export import export_onnx
        from zoo.deploy.quantize import quantize_on_training_images

        fp32, int8 = self.folder / "fp32.onnx", self.folder / "int8.onnx"
        if not fp32.is_file():
            export_onnx(self.model, fp32, threshold=self.threshold)
        if dtype == "int8" and not int8.is_file():
            quantize_on_training_images(fp32, int8, "synthetic", self.model.stride)
        return int8 if dtype == "int8" else fp32


def paired_runners(name: str, folder: Path, resolution: tuple[int, int], variants: list[Variant]) -> list[Timed]:
    """Each variant's forward callable, decoding model and input, on the same seeded weights; a variant whose
    runtime is not installed, that the CPU cannot run (a ZooError) or whose building fails is a status instead.
    A model outside PAIRS (ZOO_ONLY) has its zoo variants alone."""
    import torch._inductor.config as inductor

    from zoo.bench.measure import SEED, bench_images
    from zoo.deploy.fold import prepare_for_inference
    from zoo.deploy.runtime import exported_runner
    from zoo.models.factory import create_model
    from zoo.models.registry import get_recipe

    zoo_name = zoo_counterpart(name)
    if name in PAIRS:
        weights = shared_weights(name, folder)
        torch.manual_seed(0)
        published = create_model(name).eval()
        zoo = prepare_for_inference(create_model(zoo_name, checkpoint_path=weights))
        published_last = copy.deepcopy(published).to(memory_format=torch.channels_last)
    else:
        torch.manual_seed(SEED)
        zoo = prepare_for_inference(create_model(zoo_name))
        published = published_last = None
        variants = [v for v in variants if v.code == "zoo"]
    exports = Exports(zoo, get_recipe(zoo_name).threshold, folder)
    image = bench_images(resolution, 1)
    last = image.contiguous(memory_format=torch.channels_last)
    zoo_last = copy.deepcopy(zoo).to(memory_format=torch.channels_last)
    inductor.freezing = True  # as zoo bench --compile: weights prepacked once
    timed = []
    for variant in variants:
        t = Timed(variant)
        timed.append(t)
        missing = missing_packages(variant)
        if missing:
            t.status, t.note = "not_installed", f"{', '.join(missing)} not installed (pip install {missing[0]})"
            continue
        try:
            if variant.runtime != "torch":
                t.forward, t.model, t.images = exported_runner(variant.runtime, exports.path(variant.dtype),
                                                               variant.dtype), zoo, image
                continue
            model = {("published", False): published, ("published", True): published_last, ("zoo", False): zoo,
                     ("zoo", True): zoo_last}[variant.code, variant.channels_last]
            t.forward = torch.compile(model) if variant.compile else model
            t.model, t.images = model, last if variant.channels_last else image
        except ZooError as exc:  # e.g. bf16 on a CPU without bf16 instructions: this machine cannot run it
            t.status, t.note = "unsupported", str(exc)
        except Exception as exc:  # a row's status, not the end of the run
            t.fail("error", exc)
    return timed


def run_once(t: Timed, sizes: Tensor, threshold: float) -> float:
    """Seconds of one forward pass of the variant (its count decoded after the clock stops)."""
    from zoo.core.precision import autocast

    with autocast("cpu", "bf16" if t.variant.dtype == "bf16" and t.variant.runtime == "torch" else "off"):
        start = time.perf_counter()
        outputs = t.forward(t.images)
        elapsed = time.perf_counter() - start
    t.count = t.model.decode(outputs, sizes, threshold)[0].count
    return elapsed


def forward_flops(timed: list[Timed]) -> dict[str, int]:
    """FLOPs of one image's forward pass of each code, counted by torch on its eager fp32 model (the exported and
    compiled variants run the zoo model's graph)."""
    from zoo.bench.measure import count_flops

    found = {}
    for t in timed:
        v = t.variant
        if v.runtime == "torch" and v.setting == ("fp32", False, False) and t.forward is not None:
            try:
                found[v.code] = count_flops(t.model, t.images)
            except Exception as exc:  # the row keeps its timing; only its FLOP columns stay empty
                print(f"{v.code}: FLOPs not counted: {type(exc).__name__}", flush=True)
    return found


@dataclass(frozen=True)
class RunContext:
    """What every row of a run shares: its id, the machine when it started, the ceilings measured then."""

    run: str
    load: float
    busy: str
    ceilings: dict[str, float | None]
    instructions: dict[str, str | None]


def measure_ceilings(budget_seconds: float) -> tuple[dict, dict]:
    """The fp32, bf16 and int8 ceilings (zoo.bench.ceiling.compute_ceiling) and the instruction set each can
    use; a ceiling that cannot be measured (int8 without onnxruntime) is None."""
    from zoo.bench.ceiling import ceiling_instructions, compute_ceiling

    cpu = torch.device("cpu")
    ceilings, instructions = {}, {}
    for dtype in CEILING_DTYPES:
        try:
            ceilings[dtype] = compute_ceiling(cpu, dtype, budget_seconds=budget_seconds)
        except ZooError as exc:
            ceilings[dtype] = None
            print(f"ceiling {dtype}: not measured ({exc})", flush=True)
        instructions[dtype] = ceiling_instructions(cpu, dtype)
        if ceilings[dtype]:
            print(f"ceiling {dtype}: {ceilings[dtype]:.0f} GFLOP/s ({instructions[dtype]})", flush=True)
    return ceilings, instructions


def versions() -> dict[str, str | None]:
    return {package: importlib.import_module(package).__version__ if installed(package) else None
            for package in ("onnxruntime", "openvino")}


@torch.no_grad()
def paired_timing(name: str, rounds: int, resolution: tuple[int, int], context: RunContext,
                  variants: list[Variant] | None = None) -> list[dict]:
    """The rows of one model: round 0 warms every variant up (and compiles; a failure there is the variant's
    status), then `rounds` rounds time each live variant once, in an order rotated every round."""
    import numpy as np

    from zoo.bench.measure import is_oom
    from zoo.core.provenance import environment
    from zoo.models.registry import get_recipe

    threshold = get_recipe(zoo_counterpart(name)).threshold
    sizes = torch.tensor([resolution])
    with tempfile.TemporaryDirectory() as folder:
        timed = paired_runners(name, Path(folder), resolution, VARIANTS if variants is None else variants)
        flops = forward_flops(timed)
        for t in timed:
            if t.forward is not None:
                try:
                    run_once(t, sizes, threshold)
                except Exception as exc:
                    t.fail("oom" if is_oom(exc) else "compile_failed" if t.variant.compile else "error", exc)
        load, busy = load_1m(), busy_processes()
        env = environment(torch.device("cpu"))
        for r in range(rounds):
            live = [t for t in timed if t.forward is not None]
            for t in live[r % max(len(live), 1):] + live[: r % max(len(live), 1)]:
                try:
                    t.seconds.append(run_once(t, sizes, threshold))
                except Exception as exc:
                    t.fail("oom" if is_oom(exc) else "error", exc)
    common = {**env, **versions(), "run": context.run, "run_load_1m": round(context.load, 2),
              "run_busy_processes": context.busy, "load_1m": round(load, 2), "busy_processes": busy,
              "loaded": int(is_loaded(load, env["cpu_threads"])), "model": zoo_counterpart(name),
              "resolution": f"{resolution[0]}x{resolution[1]}", "rounds": rounds}
    timed_ok = {t.variant: np.array(t.seconds) for t in timed if t.status == "ok" and t.seconds}
    base = timed_ok.get(Variant("published"))
    rows = []
    for t in timed:
        v = t.variant
        row = {**common, "code": v.code, "runtime": v.runtime, "dtype": v.dtype, "channels_last": v.channels_last,
               "compile": v.compile, "status": t.status, "ceiling_gflops_per_s": context.ceilings.get(v.dtype),
               "ceiling_instructions": context.instructions.get(v.dtype),
               "note": "; ".join(n for n in (t.note, ZOO_ONLY.get(name, "")) if n)}
        times = timed_ok.get(v)
        if times is not None:
            # The published code has no compiled pass: a compiled torch row is rated against its eager one at the
            # same dtype and layout, the comparison `zoo predict`'s compiled default answers to.
            reference = Variant("published", dtype=v.dtype, channels_last=v.channels_last)
            same = timed_ok.get(reference) if v.runtime == "torch" else None
            row.update(median_ms=1e3 * float(np.median(times)), p10_ms=1e3 * float(np.percentile(times, 10)),
                       p90_ms=1e3 * float(np.percentile(times, 90)), count=t.count,
                       speedup_vs_published_fp32=None if base is None else float(np.median(base / times)),
                       speedup_vs_published_same_setting=None if same is None else float(np.median(same / times)))
            # compiled and exported variants run the zoo model's graph: its count
            code_flops = flops.get(v.code)
            if code_flops:
                row["gflops_per_image"] = code_flops / 1e9
                row["achieved_gflops_per_s"] = row["gflops_per_image"] / (row["median_ms"] / 1e3)
                if row["ceiling_gflops_per_s"]:
                    row["ceiling_fraction"] = row["achieved_gflops_per_s"] / row["ceiling_gflops_per_s"]
        rows.append(row)
    return rows


def summary(row: dict) -> str:
    keys = ("model", "code", "runtime", "dtype", "channels_last", "compile", "status", "median_ms", "count",
            "ceiling_fraction", "speedup_vs_published_fp32", "speedup_vs_published_same_setting", "note")
    return " ".join(f"{k}={row.get(k):.3g}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}"
                    for k in keys if row.get(k) not in (None, ""))


def paired(models: list[str], rounds: int, resolution: tuple[int, int], out: Path, ceiling_budget: float) -> None:
    """One run: the machine's load and ceilings once, then each model's rows appended to `out` as it finishes."""
    from zoo.core.csvrows import append_rows

    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load, busy = load_1m(), busy_processes()
    print(f"run {run}: load {load:.2f}; busy: {busy or 'none'}", flush=True)
    context = RunContext(run, load, busy, *measure_ceilings(ceiling_budget))
    for name in models:
        rows = paired_timing(name, rounds, resolution, context)
        for row in rows:
            print(summary(row), flush=True)
        append_rows(out, rows, PAIRED_COLUMNS_V2, schema="PAIRED_COLUMNS_V2",
                    remedy="move the file aside or pass another --out")


def main(argv: list[str] | None = None) -> int:
    from zoo.bench.config import BenchConfig, parse_list, parse_resolution
    from zoo.bench.run import run_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="published models to time with their zoo pair (default: "
                        f"{', '.join(PAIRS)}); with --paired also {', '.join(ZOO_ONLY)} alone (default: all)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--resolution", type=parse_resolution, default=(768, 1024), help="HEIGHTxWIDTH")
    parser.add_argument("--out", type=Path, help=f"default results/bench.csv; with --paired {PAIRED_OUT}")
    parser.add_argument("--paired", type=int, metavar="ROUNDS",
                        help="instead: time every variant once per round in one process (see PAIRED_COLUMNS_V2), "
                             f"appending to {PAIRED_OUT}")
    parser.add_argument("--ceiling-budget", type=float, default=20.0, metavar="SECONDS",
                        help="with --paired: the longest a ceiling's full-size workload may take (else it "
                             "is measured at a quarter the size)")
    args = parser.parse_args(argv)
    known = {**PAIRS, **ZOO_ONLY} if args.paired else PAIRS
    models = parse_list(args.models or ",".join(known), "--models")
    for name in models:
        if name not in known:
            raise SystemExit(f"--models: {name!r} is not one of {', '.join(known)}"
                             + ("" if args.paired else f" ({', '.join(ZOO_ONLY)}: with --paired only)"))
    register()
    if args.paired:
        try:
            for name in models:
                if name in CHECKOUTS:
                    check_checkout(name)
            paired(models, args.paired, args.resolution, args.out or PAIRED_OUT, args.ceiling_budget)
        except ZooError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    for name in models:
        with tempfile.TemporaryDirectory() as folder:
            zoo_model = PAIRS[name][0]
            weights = {zoo_model: str(shared_weights(name, Path(folder)))}
            common = dict(resolution=args.resolution, fp32_reference=True, iters=args.iters, train_step=False,
                          weights=weights, data=None, out=args.out or Path("results/bench.csv"))
            # both codes under the same settings: plain fp32, and bf16 autocast + channels_last
            run_bench(BenchConfig(models=[name, zoo_model], dtypes=("bf16",), channels_last=True, **common))
            # the zoo's other paths on the same weights: compiled (weights frozen), onnxruntime fp32 and int8
            run_bench(BenchConfig(models=[zoo_model], dtypes=("bf16", "fp32", "int8"), channels_last=True,
                                  compile=True, runtimes=("torch", "onnxruntime"), **common))
    return 0


if __name__ == "__main__":
    sys.exit(main())
