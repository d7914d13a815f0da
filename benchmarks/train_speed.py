"""One training step of each family in the zoo beside the published training step: same crops, same batch, one run.

For each model (default p2pnet, csrnet_bn, cpn) it times, interleaved round by round so that every variant sees
the same drift of a shared or virtual CPU:

- the zoo's step as the trainer takes it (zoo.bench.bench.training_step: the model, its family's loss on the
  targets its `target_encoder()` makes, backward, clipping, the recipe's optimizer) in fp32, in bf16 autocast with
  channels_last, and each of those through `torch.compile` (a compile that fails is a row's `status`);
- the published step of the family, imported from a checkout outside this repository (nothing of it is copied
  here): P2PNet's SetCriterion_Crowd with its HungarianMatcher_Crowd, Adam in train.py's two groups and gradient
  clipping at 0.1, on its own network ($P2PNET_PUBLISHED, TencentYoutuResearch/CrowdCounting-P2PNet); CSRNet's
  summed squared error on a density target with train.py's SGD ($CSRNET_PUBLISHED, leeyeehoo/CSRNet-pytorch); in
  fp32 and in bf16 autocast with channels_last. CPN has no published PyTorch training code that runs here: its
  rows are the zoo's alone. A checkout that is not given skips its rows with a note naming the variable;
- apart from the step, the data pipeline's share: producing batches from the trainer's loader
  (zoo.training.data) on `--data`;
- the machine's ceilings in fp32 and bf16 (zoo.bench.ceiling.compute_ceiling), against which each row's
  achieved training GFLOP/s (forward and backward FLOPs from torch's counter) is rated.

Every row records where and when it was measured, with the 1-minute load average when its timed rounds began
and the busiest other processes then; a row measured with the load above its thread count is flagged `loaded`.

    git clone https://github.com/TencentYoutuResearch/CrowdCounting-P2PNet /somewhere/p2pnet   # outside the repo
    git clone https://github.com/leeyeehoo/CSRNet-pytorch /somewhere/csrnet
    P2PNET_PUBLISHED=/somewhere/p2pnet CSRNET_PUBLISHED=/somewhere/csrnet python -m benchmarks.train_speed

The published P2PNet recipe stacks 4 crops of 128 px from each of its 8 images (32 crops a step); `--batch`
sets the crops of a step for every code alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import busy_processes, is_loaded, load_1m
from benchmarks.published_speed import PublishedCSRNet, PublishedP2PNet, published_checkout
from zoo.bench import measure as bench
from zoo.bench.ceiling import compute_ceiling
from zoo.core import provenance
from zoo.core.csvrows import append_rows
from zoo.core.device import resolve_device
from zoo.core.errors import ZooError
from zoo.core.precision import AMP_OF_DTYPE, autocast
from zoo.models.factory import create_model
from zoo.models.registry import get_entry, get_recipe

COLUMNS = [
    # the run and the machine
    "run", "date", "git_commit", "device_name", "torch", "threads", "load_1m", "loaded", "busy_processes",
    # what ran
    "model", "family", "code", "precision", "channels_last", "compiled", "batch", "crop", "data", "warmup", "iters",
    "status",
    # speed
    "crops_per_s", "step_ms_median", "step_ms_p10", "step_ms_p90", "data_ms_per_batch", "train_gflops_per_crop",
    "achieved_gflops_per_s", "ceiling_gflops_per_s", "ceiling_fraction", "speedup_vs_published_fp32",
    "speedup_vs_published_same_precision", "note",
]
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Variant:
    code: str  # "zoo" or "published"
    precision: str  # "fp32" or "bf16" (autocast)
    channels_last: bool
    compiled: bool = False


def variants(code: str, compile: bool) -> list[Variant]:
    """fp32, and bf16 autocast with channels_last; the zoo's also compiled (the published code eager only)."""
    eager = [Variant(code, "fp32", False), Variant(code, "bf16", True)]
    if code == "zoo" and compile:
        return [*eager, *(Variant(code, v.precision, v.channels_last, compiled=True) for v in eager)]
    return eager


# ---- the published steps ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    """A family's published training step: the encoder of its targets (None: points only) and the builder of its
    step on a batch of crops."""

    encoder: Callable[[], object] | None
    build: Callable[..., Callable[[], None]]
    note: str = ""


def p2pnet_step(batch, device: torch.device, amp: str, channels_last: bool) -> Callable[[], None]:
    """CrowdCounting-P2PNet's engine.py step on its own network: its criterion and matcher with train.py's default
    weights, Adam in its two groups (backbone at its own rate, no weight decay), clipping at 0.1."""
    net = PublishedP2PNet().net.to(device)  # imports its models package (with the import-time fix there)
    with published_checkout("P2PNET_PUBLISHED", "models/p2pnet.py"):
        import models.matcher as matcher
        import models.p2pnet as p2pnet
    criterion = p2pnet.SetCriterion_Crowd(1, matcher=matcher.HungarianMatcher_Crowd(cost_class=1, cost_point=0.05),
                                          weight_dict={"loss_ce": 1, "loss_points": 0.0002}, eos_coef=0.5,
                                          losses=["labels", "points"]).to(device)
    backbone = [p for n, p in net.named_parameters() if "backbone" in n]
    rest = [p for n, p in net.named_parameters() if "backbone" not in n]
    optimizer = torch.optim.Adam([{"params": rest}, {"params": backbone, "lr": 1e-5}], lr=1e-4)
    targets = [{"point": p.to(device), "labels": torch.ones(len(p), dtype=torch.long, device=device)}
               for p in batch.points]
    images = batch.images.contiguous(memory_format=torch.channels_last) if channels_last else batch.images
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()

    def step():
        with autocast(device, amp):
            outputs = net(images)
        # its cross-entropy weights are float32: the losses in float32, as the zoo's losses are computed
        losses = criterion({k: v.float() for k, v in outputs.items()}, targets)
        # summed as its engine.py sums them: over the criterion's terms that weight_dict names
        loss = sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        optimizer.step()

    return step


def csrnet_step(batch, device: torch.device, amp: str, channels_last: bool) -> Callable[[], None]:
    """CSRNet-pytorch's train.py step: its network, the squared error summed over the map (its
    MSELoss(size_average=False)), SGD at its learning rate, momentum and weight decay."""
    net = PublishedCSRNet().net.to(device)
    criterion = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(net.parameters(), 1e-7, momentum=0.95, weight_decay=5e-4)
    images = batch.images.contiguous(memory_format=torch.channels_last) if channels_last else batch.images
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    target = batch.targets["density"]
    net.train()

    def step():
        with autocast(device, amp):
            output = net(images)
        loss = criterion(output.float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def density_encoder():
    from zoo.models.density import DensityEncoder

    return DensityEncoder(stride=8)  # the published network's output stride


#: the published step each family is compared with
PUBLISHED = {
    "points": Published(None, p2pnet_step,
                        note="published loss as its engine.py sums it: its weight_dict names loss_points, its "
                             "criterion returns loss_point, so only loss_ce is backpropagated"),
    "density": Published(density_encoder, csrnet_step),
}
NO_PUBLISHED = "no published PyTorch training code runs here: zoo rows only"


# ---- measuring ----------------------------------------------------------------------------------------------

@dataclass
class Config:
    models: tuple[str, ...] = ("p2pnet", "csrnet_bn", "cpn")
    iters: int = 10
    warmup: int = 2
    batch: int = 8
    crop: int = 128
    threads: int | None = 2
    compile: bool = True
    data: str = "synthetic"
    device: str = "cpu"


@dataclass
class Timed:
    """A variant in the rounds: its step, or why it has none."""

    variant: Variant
    step: Callable[[], None] | None = None
    status: str = "ok"
    note: str = ""
    flops: int | None = None
    seconds: list[float] | None = None


def failure(exc: BaseException, compiled: bool) -> tuple[str, str]:
    status = "oom" if bench.is_oom(exc) else "compile_failed" if compiled else "error"
    return status, f"{type(exc).__name__}: {bench.first_line(exc)}"


def zoo_step(name: str, batch, device: torch.device, variant: Variant) -> Callable[[], None]:
    torch.manual_seed(bench.SEED)  # every variant starts from the same weights
    model = create_model(name).to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    runner = torch.compile(model) if variant.compiled else model
    recipe = get_recipe(name)
    return bench.training_step(model, runner, batch, recipe, device, AMP_OF_DTYPE[variant.precision],
                         variant.channels_last)


def warm(timed: list[Timed], warmup: int) -> None:
    """Each variant's untimed steps: the first of an eager one under the FLOP counter, the first of a compiled
    one compiles. A variant that fails is left out of the rounds with its status."""
    for t in timed:
        if t.step is None:
            continue
        try:
            if not t.variant.compiled:
                t.flops = bench.count_step_flops(t.step)
            for _ in range(max(warmup, 1) - (not t.variant.compiled)):
                t.step()
        except Exception as exc:  # a row's status, not the end of the run
            t.status, t.note = failure(exc, t.variant.compiled)
            t.step = None


def rounds(timed: list[Timed], iters: int, device: torch.device) -> None:
    """`iters` rounds, each timing one step of every variant, in an order rotated every round."""
    live = [t for t in timed if t.step is not None]
    for t in live:
        t.seconds = []
    for r in range(iters):
        for t in live[r % len(live):] + live[: r % len(live)]:
            if t.step is None:
                continue
            try:
                bench.synchronize(device)
                start = time.perf_counter()
                t.step()
                bench.synchronize(device)
                t.seconds.append(time.perf_counter() - start)
            except Exception as exc:
                t.status, t.note = failure(exc, t.variant.compiled)
                t.step, t.seconds = None, None


def data_seconds(name: str, encoder, stride: int, cfg: Config, batches: int) -> float:
    """Median seconds the trainer's loader (in this process, as with `workers` 0) takes to produce `cfg.batch`
    crops at `cfg.crop` px of `cfg.data`, augmented as the model's recipe augments them."""
    from zoo.data.dataset import resolve_splits
    from zoo.training.data import training_crops, training_loader

    recipe = get_recipe(name).override(crop_size=cfg.crop)
    splits = resolve_splits(cfg.data)
    if not splits.train:
        raise ZooError(f"--data {cfg.data}: the training split is empty")
    crops = training_crops(splits, stride, recipe, bench.SEED, recipe.crops_per_image, encoder)
    per_batch = -(-cfg.batch // recipe.crops_per_image)  # images a loader batch takes for cfg.batch crops
    loader = training_loader(crops, per_batch, bench.SEED, workers=0)
    seconds, produced = [], iter(loader)
    for _ in range(batches):
        start = time.perf_counter()
        try:
            got = next(produced)
        except StopIteration:
            produced = iter(loader)
            got = next(produced)
        seconds.append((time.perf_counter() - start) * cfg.batch / len(got.images))
    return float(np.median(seconds))


def measure_model(name: str, cfg: Config, device: torch.device, ceilings: dict[str, float], run: str) -> list[dict]:
    """The rows of one model: its zoo variants and its family's published ones, timed in the same rounds."""
    family = get_entry(name).family
    torch.manual_seed(bench.SEED)
    probe = create_model(name)
    encoder, stride = probe.target_encoder(), probe.stride
    del probe
    batch = bench.train_batch(encoder, cfg.crop, cfg.batch).to(device)
    timed = []
    for variant in variants("zoo", cfg.compile):
        try:
            timed.append(Timed(variant, zoo_step(name, batch, device, variant)))
        except Exception as exc:
            timed.append(Timed(variant, None, *failure(exc, variant.compiled)))
    published, skipped = PUBLISHED.get(family), NO_PUBLISHED
    if published is not None:
        skipped = ""
        crops = batch if published.encoder is None else bench.train_batch(published.encoder(), cfg.crop, cfg.batch)
        for variant in variants("published", cfg.compile):
            torch.manual_seed(bench.SEED)
            try:
                timed.append(Timed(variant, published.build(crops.to(device), device,
                                                             AMP_OF_DTYPE[variant.precision], variant.channels_last),
                                   note=published.note))
            except ZooError as exc:  # the checkout is not given: no published rows
                skipped = str(exc)
                break
            except Exception as exc:
                timed.append(Timed(variant, None, *failure(exc, compiled=False)))
        timed = [t for t in timed if not (skipped and t.variant.code == "published")]
    if skipped:
        print(f"{name}: published rows skipped: {skipped}", flush=True)
    data_ms = 1e3 * data_seconds(name, encoder, stride, cfg, max(cfg.iters, 1))
    warm(timed, cfg.warmup)
    load, busy = load_1m(), busy_processes()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    rounds(timed, cfg.iters, device)
    flops = {t.variant.code: t.flops for t in timed if t.flops}  # one count per code, its eager fp32 step's
    threads = torch.get_num_threads()
    common = {"run": run, "date": date, "git_commit": provenance.git_commit(),
              "device_name": provenance.device_name(device), "torch": torch.__version__, "threads": threads,
              "load_1m": round(load, 2), "loaded": int(is_loaded(load, threads)), "busy_processes": busy,
              "model": name, "family": family, "batch": cfg.batch, "crop": cfg.crop, "data": cfg.data,
              "warmup": cfg.warmup, "iters": cfg.iters}
    rows = []
    for t in timed:
        v = t.variant
        row = {**common, "code": v.code, "precision": v.precision, "channels_last": int(v.channels_last),
               "compiled": int(v.compiled), "status": t.status,
               "data_ms_per_batch": data_ms if v.code == "zoo" else None,
               "ceiling_gflops_per_s": ceilings.get(v.precision),
               "note": "; ".join(n for n in (t.note, skipped if v.code == "zoo" else "") if n)}
        if t.status == "ok" and t.seconds:
            seconds = np.array(t.seconds)
            row.update(step_ms_median=1e3 * float(np.median(seconds)),
                       step_ms_p10=1e3 * float(np.percentile(seconds, 10)),
                       step_ms_p90=1e3 * float(np.percentile(seconds, 90)),
                       crops_per_s=cfg.batch / float(np.median(seconds)))
            if flops.get(v.code):
                row["train_gflops_per_crop"] = flops[v.code] / cfg.batch / 1e9
        rows.append(row)
    add_derived(rows)
    return rows


def add_derived(rows: list[dict]) -> None:
    """Achieved GFLOP/s and its fraction of the ceiling; the speedups against the published rows of the same run,
    model, batch and crop: its fp32 row, and its row of the same precision (either empty where that row is absent
    or failed)."""
    for row in rows:
        if row.get("train_gflops_per_crop") and row.get("crops_per_s"):
            row["achieved_gflops_per_s"] = row["train_gflops_per_crop"] * row["crops_per_s"]
            if row.get("ceiling_gflops_per_s"):
                row["ceiling_fraction"] = row["achieved_gflops_per_s"] / row["ceiling_gflops_per_s"]
        references = {r["precision"]: r for r in rows if r["code"] == "published" and not r["compiled"]
                      and r["status"] == "ok" and r.get("step_ms_median")
                      and all(r[k] == row[k] for k in ("run", "model", "batch", "crop"))}
        for column, reference in (("speedup_vs_published_fp32", references.get("fp32")),
                                  ("speedup_vs_published_same_precision", references.get(row["precision"]))):
            ok = reference is not None and row["status"] == "ok" and row.get("step_ms_median")
            row[column] = reference["step_ms_median"] / row["step_ms_median"] if ok else None


def measure(cfg: Config) -> list[dict]:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for name in cfg.models:
        get_entry(name)  # an unknown model: its one-line error before any timing
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ceilings = {}
    for precision in PRECISIONS:
        ceilings[precision] = compute_ceiling(device, precision)
        print(f"ceiling {precision}: {ceilings[precision]:.0f} GFLOP/s", flush=True)
    rows = []
    for name in cfg.models:
        for row in measure_model(name, cfg, device, ceilings, run):
            print(summary(row), flush=True)
            rows.append(row)
    return rows


def summary(row: dict) -> str:
    keys = ("model", "code", "precision", "channels_last", "compiled", "status", "step_ms_median", "crops_per_s",
            "ceiling_fraction", "speedup_vs_published_fp32", "speedup_vs_published_same_precision")
    return " ".join(f"{k}={row.get(k):.3g}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}" for k in keys)


def write(path: Path, rows: list[dict]) -> None:
    append_rows(path, rows, COLUMNS, schema="train-speed", remedy="move it aside or pass another --out")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="p2pnet,csrnet_bn,cpn", help="comma-separated registered models")
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (one step of every variant each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant first (at least 1)")
    parser.add_argument("--batch", type=int, default=8, help="crops per training step")
    parser.add_argument("--crop", type=int, default=128, help="crop side, px")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--data", default="synthetic", help="dataset whose loader is timed (synthetic, cells, path)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/train_speed.csv"))
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled zoo steps")
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models or args.iters < 1 or args.batch < 1 or args.crop < 1:
        parser.error("--models must name a model; --iters, --batch and --crop must be at least 1")
    cfg = Config(models=models, iters=args.iters, warmup=args.warmup, batch=args.batch, crop=args.crop,
                 threads=args.threads or None, compile=not args.no_compile, data=args.data, device=args.device)
    try:
        write(args.out, measure(cfg))
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
