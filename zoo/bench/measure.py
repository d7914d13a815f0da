"""Measuring one unit (model x setting x batch size): FLOPs, latency, counts, peak memory, training speed, accuracy.

Every model is built after `torch.manual_seed(0)`, so two settings of one model run the same random weights and
their counts on the same fixed input can be compared. The input is a synthetic crowd resized to the benchmark
resolution (the same image repeated over the batch), so counts also agree across batch sizes.
"""

from __future__ import annotations

import copy
import gc
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.bench.config import Unit
from zoo.core.device import synchronize
from zoo.core.errors import ZooError
from zoo.core.precision import AMP_OF_DTYPE, autocast
from zoo.data import transforms as T
from zoo.data.collate import collate
from zoo.data.synthetic import synthesize_image
from zoo.deploy.export import export_onnx, require
from zoo.deploy.fold import prepare_for_inference
from zoo.inference.evaluate import evaluate
from zoo.inference.predict import load_inference
from zoo.metrics.names import HEADLINE_METRICS
from zoo.models.factory import create_model
from zoo.models.registry import get_entry, get_recipe

SEED = 0
MIB = 2**20


def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an allocator RuntimeError (CPU: "can't allocate memory")."""
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def count_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one forward pass of `images`, as torch's counter reports them: 2 per multiply-accumulate."""
    with FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops()


def forward_pass(runner, images: torch.Tensor):
    """The timed call (a seam for tests that simulate running out of memory)."""
    return runner(images)


def scene(split: str, index: int) -> T.Sample:
    """Synthetic scene `index` of `split` at the generator's own size (which can place every head)."""
    bgr, points = synthesize_image(SEED, split, index)
    points = points.astype(np.float32)
    return T.Sample(np.ascontiguousarray(bgr[..., ::-1]), points, np.arange(len(points)))


def bench_images(resolution: tuple[int, int], batch_size: int) -> torch.Tensor:
    """The fixed timed input: synthetic test scene 0 resized to `resolution`, repeated `batch_size` times."""
    image = T.to_tensor(T.resize(scene("test", 0), *resolution))
    return image.expand(batch_size, -1, -1, -1).contiguous()


def train_batch(encoder, crop: int, batch_size: int):
    """`batch_size` seeded crop x crop windows of synthetic training scenes with the targets `encoder` makes
    (a model's `target_encoder()`; None: points only)."""
    rng = np.random.default_rng(SEED)
    samples = []
    for index in range(batch_size):
        window = T.random_crop(T.random_scale(scene("train", index), rng, 1.0, 1.0, min_side=crop), rng, crop)
        meta = {"path": f"synthetic-train-{index}", "index": index, "dataset": f"bench-{crop}",
                "point_ids": window.ids, "scale": window.scale, "valid_size": window.size}
        targets = encoder(window.points, window.size, meta) if encoder is not None else {}
        samples.append({"image": T.to_tensor(window), "points": torch.from_numpy(window.points),
                        "targets": targets, "meta": meta})
    return collate(samples)


def build(unit: Unit) -> tuple[torch.nn.Module, float]:
    """The unit's model as trained (batch norm unfolded) and its decision threshold: with weights, both as `zoo
    eval` loads them (the threshold the checkpoint records), else seeded random weights and the registry recipe's
    threshold."""
    torch.manual_seed(SEED)
    if unit.weights:
        run = load_inference(unit.weights, unit.model, amp=AMP_OF_DTYPE[unit.dtype], fold_bn=False)
        return run.model, run.threshold
    return create_model(unit.model), get_recipe(unit.model).threshold


def export_for_unit(unit: Unit, path: Path) -> str:
    """The unit's model, built as `build` builds it (the same seeded weights), prepared for inference and exported
    to `path` for its runtime; an int8 unit's export is then quantized, calibrated on the training images of
    `unit.calibration`. Done before the unit's own process starts: the exporter's memory is not the runtime's,
    and its peak would otherwise be the unit's peak RSS."""
    model, threshold = build(unit)
    model = prepare_for_inference(model)
    if unit.dtype == "int8":
        from zoo.deploy.quantize import export_int8

        export_int8(model, path, unit.calibration, threshold=threshold)
    else:
        export_onnx(model, path, threshold=threshold)
    return str(path)


def inference_runner(unit: Unit, inference):
    """What the timed passes call: the prepared model, compiled or not, or the unit's ONNX file on its runtime
    (with torch's threads; OpenVINO at the unit's dtype)."""
    if unit.runtime != "torch":
        from zoo.deploy.runtime import exported_runner

        return exported_runner(unit.runtime, unit.onnx, unit.dtype)
    if not unit.compile:
        return inference
    from zoo.deploy.compiled import compile_module  # as `zoo predict --compile` compiles it

    return compile_module(inference)


def measure_unit(unit: Unit) -> dict:
    """All figures of one unit; keys are CSV columns. Running out of memory is recorded, not raised. Inference runs
    the model prepared as zoo eval and predict run it (batch norm folded), the training step the model as built."""
    device = torch.device(unit.device)
    model, threshold = build(unit)
    model = model.to(device).eval()
    height, width = unit.resolution
    if height % model.stride or width % model.stride:
        raise ZooError(f"--resolution {height}x{width}: {unit.model} needs sides that are multiples of "
                       f"{model.stride}")
    if unit.channels_last:
        model = model.to(memory_format=torch.channels_last)
    inference = prepare_for_inference(copy.deepcopy(model))
    runner = inference_runner(unit, inference)
    row = {"family": get_entry(unit.model).family, "status": "ok",
           "params_total": sum(p.numel() for p in model.parameters()),
           "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    figures, oom = attempt(lambda: time_inference(inference, runner, unit, device, threshold), device)
    row.update(figures)
    if oom:
        row.update(status="oom", note=f"inference at batch {unit.batch_size}: {oom}")
    row.update(peak_memory(device, unit.isolated))
    if unit.runtime == "onnxruntime":
        row["onnxruntime"] = require("onnxruntime").__version__
    elif unit.runtime == "openvino":  # the CSV has no column of its own for it (its schema stays the same)
        row.setdefault("note", f"openvino {require('openvino').__version__}")
    if unit.weights and unit.data:
        # an exported runtime scores its own outputs; torch scores eagerly (compiling again for each image size
        # would cost more than the scoring)
        forward = inference if unit.runtime == "torch" else runner
        row.update(accuracy(inference, unit, device, threshold, forward))
    if unit.train_step:
        trainer = torch.compile(model) if unit.compile else model
        figures, oom = attempt(lambda: train_throughput(model, trainer, unit, device), device)
        row.update(figures)
        if oom:
            row.update(status="train_oom" if row["status"] == "ok" else row["status"], note=f"training step: {oom}")
    return row


def attempt(measurement, device: torch.device) -> tuple[dict, str | None]:
    """(figures, None), or ({}, the error's first line) when the measurement ran out of memory."""
    try:
        return measurement(), None
    except Exception as exc:
        if not is_oom(exc):
            raise
        message = first_line(exc)
    release(device)  # outside the handler: the traceback's frames, which hold the big tensors, are gone
    return {}, message


@torch.no_grad()
def time_inference(model, runner, unit: Unit, device: torch.device, threshold: float) -> dict:
    """Warm-up (the first pass eager, under the FLOP counter), then `iters` timed, synchronized passes."""
    images = bench_images(unit.resolution, unit.batch_size).to(device)
    if unit.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, AMP_OF_DTYPE[unit.dtype]):
        flops = count_flops(model, images)
        # A compiled runner compiles on its first call: give it warm-up passes of its own.
        for _ in range(max(unit.warmup, 1) - (runner is model)):
            forward_pass(runner, images)
        seconds = []
        for _ in range(unit.iters):
            synchronize(device)
            start = time.perf_counter()
            outputs = forward_pass(runner, images)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
    sizes = torch.tensor([unit.resolution] * unit.batch_size, device=device)
    counts = [p.count for p in model.decode(outputs, sizes, threshold)]
    median = statistics.median(seconds)
    return {"gflops_per_image": flops / unit.batch_size / 1e9, "latency_ms_median": 1e3 * median,
            "latency_ms_p90": 1e3 * float(np.percentile(seconds, 90)), "images_per_s": unit.batch_size / median,
            "mean_count": float(np.mean(counts))}


def train_throughput(model, runner, unit: Unit, device: torch.device) -> dict:
    """Images/s of full optimizer steps (the family's loss, backward, clipping, step) at the recipe's crop and
    batch. Runs last: it changes the weights."""
    recipe = get_recipe(unit.model)
    batch_size = recipe.batch_size * recipe.crops_per_image
    batch = train_batch(model.target_encoder(), recipe.crop_size, batch_size).to(device)
    model.train()
    step = training_step(model, runner, batch, recipe, device, AMP_OF_DTYPE[unit.dtype], unit.channels_last)
    seconds = step_seconds(step, device, unit.warmup, unit.train_iters)
    model.eval()
    return {"train_images_per_s": unit.train_iters * batch_size / sum(seconds),
            "train_batch_size": batch_size, "train_crop": recipe.crop_size}


def training_step(model, runner, batch, recipe, device: torch.device, amp: str, channels_last: bool):
    """One full optimizer step on `batch` as the trainer takes it: `runner` (the model, or it compiled) forward
    under autocast `amp`, the family's loss, backward, clipping and the recipe's optimizer (the trainer's
    parameter groups and step). Returns the step as a call without arguments; each call changes the weights."""
    from zoo.training.optim import build_optimizer, optimizer_step

    images = batch.images.contiguous(memory_format=torch.channels_last) if channels_last else batch.images
    optimizer = build_optimizer(model, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step():
        with autocast(device, amp):
            outputs = runner(images)
        loss, _ = model.loss(outputs, batch)
        optimizer_step(loss, model, optimizer, scaler, recipe.grad_clip)

    return step


def step_seconds(step, device: torch.device, warmup: int, iters: int) -> list[float]:
    """`max(warmup, 1)` untimed calls of `step` (a compiled step compiles in the first), then the wall time of
    each of `iters` synchronized calls."""
    for _ in range(max(warmup, 1)):
        step()
    seconds = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def count_step_flops(step) -> int:
    """FLOPs of one call of a training `step` as torch's counter reports them (2 per multiply-accumulate): the
    forward and backward passes; the optimizer's elementwise updates count no FLOPs there."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def accuracy(model, unit: Unit, device: torch.device, threshold: float, forward) -> dict:
    from zoo.data.dataset import resolve_splits

    splits = resolve_splits(unit.data)
    if not splits.test:
        raise ZooError(f"--data {unit.data}: the test split is empty, so accuracy cannot be measured")
    summary = evaluate(model, splits.test, f"{splits.name}:test", threshold=threshold, device=device,
                       amp=AMP_OF_DTYPE[unit.dtype], channels_last=unit.channels_last, forward=forward).summary()
    return {k: summary[k] for k in HEADLINE_METRICS}


def peak_memory(device: torch.device, isolated: bool) -> dict:
    """CUDA: the allocator's peaks since the unit began. CPU: the peak RSS of this process, reported only when
    the process is fresh (its peak is then this unit's own)."""
    if device.type == "cuda":
        return {"cuda_peak_allocated_mb": torch.cuda.max_memory_allocated(device) / MIB,
                "cuda_peak_reserved_mb": torch.cuda.max_memory_reserved(device) / MIB}
    return {"peak_rss_mb": peak_rss_mb()} if isolated else {}


def peak_rss_mb() -> float:
    """Peak resident set of this process's address space in MiB.

    Linux's VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a worker started by
    a 1 GB parent would report at least 1 GB whatever it did itself.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB  # bytes on macOS, where /proc is absent


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
