"""One trainer for every registered model: the recipe comes from the registry, the loss and decoding from the
model family, so nothing here depends on which model is trained. `train` builds everything, then runs
`for epoch: for batch: step` and leaves the rest (validation, calibrations, the moving average, checkpoints,
logs, early stopping) to the hooks the resolved recipe asks for (zoo.training.hooks).

Run with `zoo train MODEL`, or on several GPUs / nodes with `torchrun --nproc-per-node N -m zoo.cli train MODEL`.
`batch_size` is the global number of images per step: each of the W ranks takes batch_size / W of them, so a
DDP run takes the same steps as one process would.

Reproducibility: the order of images in an epoch comes from (seed, epoch) and each image's augmentation from
(seed, epoch, index), and checkpoints hold the torch RNG state, so a run resumed from its `last.pt` ends with the
same weights as one that was never interrupted (checked on CPU).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape

from zoo.core import distributed as zdist
from zoo.core.device import resolve_device
from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.precision import autocast, slow_amp_note
from zoo.data.dataset import resolve_splits
from zoo.inference.evaluate import check_views, evaluate
from zoo.inference.predict import load_inference
from zoo.metrics.names import HEADLINE_METRICS, POSE_METRICS, VIEW_KEYS, VIEW_METRICS, label
from zoo.models.factory import create_model
from zoo.models.weights.checkpoint import Checkpoint, Selection, load_model_state
from zoo.training.config import ResolvedRun, TrainConfig, resolve_run
from zoo.training.data import training_crops, training_loader
from zoo.training.hooks import Run, build_hooks, restore
from zoo.training.optim import build_optimizer, lr_factor, optimizer_step, set_learning_rates
from zoo.training.runs import run_folder

__all__ = ["TrainConfig", "build_optimizer", "lr_factor", "optimizer_step", "train"]

RESULT_KEYS = (*HEADLINE_METRICS, *POSE_METRICS, *VIEW_KEYS)


def train(config: TrainConfig, console: Console | None = None) -> dict:
    console = console or Console()
    device = setup_distributed(config.device)
    torch.manual_seed(config.seed)
    splits = resolve_splits(config.data, config.format, config.seed, config.val_fraction)
    if not splits.train:
        raise ZooError(f"{config.data}: the training split is empty")
    resolved = resolve_run(config, device, splits, zdist.world_size())
    recipe, amp = resolved.recipe, resolved.amp
    check_views(recipe.test_views, splits.test)  # before training, not after it
    net = create_model(config.model, **resolved.model_kwargs).to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    hooks = build_hooks(resolved, net)
    crops = training_crops(splits, net.stride, recipe, config.seed, recipe.crops_per_image, net.target_encoder())
    loader = training_loader(crops, resolved.per_rank_batch, config.seed, config.workers)
    optimizer = build_optimizer(net, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    model = torch.nn.parallel.DistributedDataParallel(net) if zdist.is_distributed() else net
    total_steps, warmup_steps = recipe.epochs * len(loader), recipe.warmup_epochs * len(loader)

    # Chosen only now that the model and data are known to be good: a bad flag neither claims a folder nor
    # deletes the run that --overwrite would replace. Rank 0 chooses (it creates the folder) and tells the others.
    out = zdist.from_main(run_folder(config.model, config.out, resume=config.resume, overwrite=config.overwrite)
                          if zdist.is_main() else None)
    run = Run(resolved, splits, net, optimizer, scaler, out, console, hooks, len(loader), recipe.threshold,
              Selection(resolved.selection), notes=start_notes(resolved, splits, out))
    start(run)

    hooks.on_train_start(run)
    try:
        for epoch in range(run.epoch, recipe.epochs):
            if run.stop:
                break
            loader.sampler.set_epoch(epoch)
            crops.set_epoch(epoch)
            model.train()
            frozen = epoch < recipe.freeze_backbone_epochs
            if frozen:
                net.backbone.eval()  # also keeps BatchNorm statistics fixed while the backbone is frozen
            run.begin_epoch()
            for batch in loader:
                set_learning_rates(optimizer, lr_factor(run.step, total_steps, warmup_steps), frozen)
                batch = batch.to(device)
                images = batch.images
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, amp):
                    outputs = model(images)
                loss, parts = net.loss(outputs, batch)
                check_finite(loss, parts, epoch, run.step, device)
                optimizer_step(loss, net, optimizer, scaler, recipe.grad_clip)
                run.count_step(loss, parts, len(batch.images) * resolved.world_size)
                hooks.on_step_end(run)
            run.end_epoch()
            hooks.on_epoch_end(run)
            run.stop = zdist.from_main(run.stop)  # rank 0 validated and decided; every rank waits for it here
    finally:
        hooks.close(run)

    run.result = {"model": config.model, "epochs": len(run.history), "checkpoint": None}
    if run.main:
        # This run's own checkpoint: best.pt only when this run (before a resume included) validated one.
        chosen = out / "best.pt" if run.selection.best is not None else out / "last.pt"
        run.result.update(final_test(run, chosen))
    hooks.on_train_end(run)
    return run.result


def setup_distributed(device: str) -> torch.device:
    checked = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not zdist.is_distributed():
        dist.init_process_group("nccl" if checked.type == "cuda" else "gloo")
    if checked.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))  # torchrun's process on this node takes its own GPU
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return checked


def start_notes(resolved: ResolvedRun, splits, out: Path) -> list[str]:
    """What the run says before its first epoch: a slow precision, skipped samples, its folder."""
    notes = []
    if note := slow_amp_note(resolved.device, resolved.amp):
        notes.append(f"[yellow]warning:[/] {escape(note)}")
    notes += [f"[yellow]skipped[/] {escape(problem)}" for problem in splits.skipped]
    return [*notes, f"run folder {escape(str(out))}"]


def start(run: Run) -> None:
    """Put the weights the run starts from in place: its last.pt on --resume, else the --init-from weights."""
    config, last = run.resolved.config, run.out / "last.pt"
    if config.resume and last.is_file():
        restore(run, last)
        run.notes.append(f"resumed from {escape(str(last))} after epoch {run.epoch}")
        return
    if config.resume:
        run.notes.append(f"no checkpoint at {escape(str(last))}: starting a new run")
    if config.init_from:
        # Weights only: the optimizer, schedule and epoch count start afresh for the new data.
        initial = Checkpoint.load(config.init_from, config.model, run.resolved.model_kwargs)
        load_model_state(run.net, initial, config.init_from)
        run.notes.append(f"initialized from {escape(str(config.init_from))}")


def check_finite(loss, parts, epoch: int, step: int, device) -> None:
    """Stop every rank together when any rank sees a non-finite loss, naming the step and the term."""
    bad = torch.tensor(float(not torch.isfinite(loss.detach())), device=device)
    if zdist.is_distributed():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bad.item():
        terms = [f"{k}={float(v):.4g}" for k, v in parts.items() if not math.isfinite(float(v))]
        terms = terms or [f"total={float(loss):.4g}"]
        raise ZooError(f"non-finite loss at epoch {epoch + 1} step {step}: {', '.join(terms)}; "
                       "training stopped, the last good checkpoint is kept")


def final_test(run: Run, chosen: Path) -> dict:
    """Test `chosen`, the checkpoint chosen on validation (the last one when there is no validation split), write
    the results beside it and record them in it."""
    splits, recipe, console, out = run.splits, run.recipe, run.console, chosen.parent
    result = {"checkpoint": str(chosen)}
    if not splits.test:
        console.print("no test split: skipping the final test")
        return result
    # Loaded as `zoo eval` loads it (load_inference), so both report the same numbers for the same checkpoint.
    loaded = load_inference(chosen, device=str(run.resolved.device), amp=run.resolved.amp)
    options = dict(threshold=loaded.threshold, device=loaded.device, amp=loaded.amp,
                   channels_last=loaded.channels_last)
    evaluator = evaluate(loaded.model, splits.test, f"{splits.name}:test", **options)
    evaluator.write_csv(out / "test_predictions.csv")
    summary = evaluator.summary()
    console.print(test_line(summary, chosen.name), highlight=False, soft_wrap=True)
    if recipe.test_views > 1:
        viewed = evaluate(loaded.model, splits.test, f"{splits.name}:test", views=recipe.test_views,
                          **options).summary()
        summary.update({"test_views": recipe.test_views, **{f"{k}_views": viewed[k] for k in VIEW_METRICS}})
        console.print(f"test, mean count of {recipe.test_views} views: " +
                      " | ".join(f"{label(k)} {summary[f'{k}_views']:.4g}" for k in VIEW_METRICS),
                      highlight=False, soft_wrap=True)
    atomic_write(out / "test_metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    tested = Checkpoint.load(chosen)
    tested.results = [*tested.results, {"split": f"{splits.name}:test", **summary}]
    tested.save(chosen, for_inference=not tested.resumable)
    result.update({k: v for k, v in summary.items() if k in RESULT_KEYS})
    return result


def test_line(summary: dict, checkpoint: str) -> str:
    """The final test's numbers: the counting metrics, or OKS AP for pose data."""
    keys, unit = (HEADLINE_METRICS, "images") if "mae" in summary else (POSE_METRICS, "persons")
    return f"test ({summary['images']} {unit}, {checkpoint}): " + " | ".join(
        f"{label(k)} {summary[k]:.4g}" for k in keys if k in summary)
