"""One trainer for every registered model: the recipe comes from the registry, the loss and decoding from the
model family, so nothing here depends on which model is trained.

Run with `zoo train MODEL`, or on several GPUs / nodes with `torchrun --nproc-per-node N -m zoo.cli train MODEL`.
`batch_size` is the global number of images per step: each of the W ranks takes batch_size / W of them, so a
DDP run takes the same steps as one process would.

Reproducibility: the order of images in an epoch comes from (seed, epoch) and each image's augmentation from
(seed, epoch, index), and checkpoints hold the torch RNG state, so a run resumed from its `last.pt` ends with the
same weights as one that was never interrupted (checked on CPU).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from zoo.core import distributed as zdist
from zoo.core.device import resolve_device
from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.precision import autocast, resolve_amp, slow_amp_note
from zoo.data.collate import collate
from zoo.data.dataset import PointDataset, is_pose, keypoint_types, resolve_splits
from zoo.deploy.fold import prepare_for_inference
from zoo.inference.evaluate import check_views, evaluate, evaluate_thresholds
from zoo.inference.predict import load_inference
from zoo.metrics.names import HEADLINE_METRICS, VIEW_KEYS, VIEW_METRICS
from zoo.metrics.pose import SUMMARY_KEYS as POSE_KEYS
from zoo.models.factory import create_model
from zoo.models.registry import get_recipe
from zoo.models.weights.checkpoint import (
    inference_state,
    load_checkpoint,
    load_model_state,
    resolve_checkpoint,
    save_checkpoint,
)
from zoo.training.runs import check_same_run, run_folder

VAL_COLUMNS = ("mae", "mse", "f1_4", "f1_8", "ap", "ap50")  # validation metrics logged per epoch (those present)
RESULT_KEYS = (*HEADLINE_METRICS, *POSE_KEYS, *VIEW_KEYS)


@dataclass
class TrainConfig:
    model: str
    data: str = "synthetic"
    format: str = "auto"
    out: str | None = None  # default runs/<model>, or the next free runs/<model>-N (zoo/runs.py)
    device: str = "cpu"
    amp: str = "auto"  # auto (bf16, or off on a CPU without bf16 instructions) | bf16 | fp16 (CUDA only) | off
    channels_last: bool = False
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # replace the run already in `out` (its files are deleted first)
    init_from: str | None = None  # checkpoint whose weights start a new run (fine-tuning); ignored on resume
    workers: int = 0
    val_fraction: float | None = None  # share of train that validates when the data has no val split
    recipe: dict = field(default_factory=dict)  # overrides of the registry recipe
    model_kwargs: dict = field(default_factory=dict)  # overrides of the model constructor


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 10% then cosine decay to 1% of the base learning rate."""
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(net, recipe):
    backbone = list(net.backbone_parameters())
    in_backbone = {id(p) for p in backbone}
    rest = [p for p in net.parameters() if id(p) not in in_backbone]
    groups = [dict(params=backbone, lr=recipe.backbone_lr, base_lr=recipe.backbone_lr, name="backbone"),
              dict(params=rest, lr=recipe.lr, base_lr=recipe.lr, name="head")]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    raise ZooError(f"unknown optimizer {recipe.optimizer!r}; choose adam, adamw or sgd")


def optimizer_step(loss: torch.Tensor, net: torch.nn.Module, optimizer, scaler: torch.amp.GradScaler,
                   grad_clip: float) -> None:
    """Backward and one optimizer step: scaled (fp16), gradients clipped to `grad_clip` once unscaled (0: no
    clipping). `zoo bench` times this same step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


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


def setup_distributed(device: str) -> torch.device:
    checked = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not zdist.is_distributed():
        dist.init_process_group("nccl" if checked.type == "cuda" else "gloo")
    if checked.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))  # torchrun's process on this node takes its own GPU
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return checked


def train(cfg: TrainConfig, console: Console | None = None) -> dict:
    console = console or Console()
    device = setup_distributed(cfg.device)
    cfg.amp = resolve_amp(cfg.amp, device)  # the run records, and a resume compares, what it trains in
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ZooError("--amp fp16 needs CUDA (it uses a gradient scaler); use --amp bf16 on CPU")
    main = zdist.is_main()
    torch.manual_seed(cfg.seed)
    recipe = get_recipe(cfg.model).override(**cfg.recipe)
    world = zdist.world_size()
    if recipe.batch_size % world:
        raise ZooError(f"batch size {recipe.batch_size} is not divisible by the {world} ranks")
    splits = resolve_splits(cfg.data, cfg.format, cfg.seed, cfg.val_fraction)
    if not splits.train:
        raise ZooError(f"{cfg.data}: the training split is empty")
    check_views(recipe.test_views, splits.test)  # before training, not after it
    if is_pose(splits.train):  # the data decides how many keypoint types the model predicts
        cfg.model_kwargs = {"num_keypoints": keypoint_types(splits.train), **cfg.model_kwargs}
    net = create_model(cfg.model, **cfg.model_kwargs).to(device)  # a family without keypoint mode refuses the option
    if recipe.fit_count_scale and not net.count_is_sum:
        raise ZooError(f"{cfg.model}: fit_count_scale needs a count that is a map's sum (a density, a heatmap's "
                       "mass); this model counts otherwise")
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if not 0.0 <= recipe.ema_decay < 1.0:
        raise ZooError(f"ema_decay must be in [0, 1), got {recipe.ema_decay}")
    if main:
        if note := slow_amp_note(device, cfg.amp):
            console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
        for problem in splits.skipped:
            console.print(f"[yellow]skipped[/] {escape(problem)}", highlight=False, soft_wrap=True)
    train_set = training_crops(splits, net.stride, recipe, cfg.seed, recipe.crops_per_image, net.target_encoder())
    # Crops whose batch statistics replace batch norm's running ones before each validation (no targets needed)
    calibration_set = (training_crops(splits, net.stride, recipe, cfg.seed, recipe.bn_recalibration)
                       if recipe.bn_recalibration else None)
    per_rank = recipe.batch_size // world
    sampler = DistributedSampler(train_set, num_replicas=world, rank=zdist.rank(), shuffle=True, seed=cfg.seed,
                                 drop_last=len(train_set) >= world)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.workers, drop_last=len(sampler) >= per_rank,
                        persistent_workers=cfg.workers > 0)
    optimizer = build_optimizer(net, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    model = torch.nn.parallel.DistributedDataParallel(net) if zdist.is_distributed() else net
    steps_per_epoch = len(loader)
    total_steps = recipe.epochs * steps_per_epoch
    warmup_steps = recipe.warmup_epochs * steps_per_epoch

    # Chosen only now that the model and data are known to be good: a bad flag neither claims a folder nor
    # deletes the run that --overwrite would replace. Rank 0 chooses (it creates the folder) and tells the others.
    out = run_folder(cfg.model, cfg.out, resume=cfg.resume, overwrite=cfg.overwrite) if main else None
    out = zdist.from_main(out)
    if main:
        console.print(f"run folder {out}")
    config_record = {"train": asdict(cfg), "recipe": asdict(recipe), "world_size": world}
    origin = provenance() if main else {}
    start_epoch, step, history, best_mae, threshold = 0, 0, [], math.inf, recipe.threshold
    resumed = {}
    if cfg.resume and (out / "last.pt").is_file():
        state = resumed = load_checkpoint(out / "last.pt")
        check_same_run(state, config_record, out / "last.pt")
        # With a moving average, "model" holds the average and "trained" the weights the optimizer moves
        load_model_state(net, {**state, "model": state.get("trained", state["model"])}, out / "last.pt")
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        best_mae, threshold = state["best_val_mae"], state.get("threshold", threshold)
        net.count_scale = state.get("count_scale", 1.0)
        if main:
            console.print(f"resumed from {out / 'last.pt'} after epoch {start_epoch}")
    else:
        if cfg.resume and main:
            console.print(f"no checkpoint at {out / 'last.pt'}: starting a new run")
        if cfg.init_from:
            # Weights only: the optimizer, schedule and epoch count start afresh for the new data.
            load_model_state(net, resolve_checkpoint(cfg.init_from, cfg.model, cfg.model_kwargs), cfg.init_from)
            if main:
                console.print(f"initialized from {cfg.init_from}")
    # The network validated, saved as best.pt and tested: the moving average (of batch norm's statistics too), or
    # the trained one
    average = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
               if recipe.ema_decay else None)
    if average and resumed:
        average.load_state_dict(resumed["average"])
    kept = average.module if average else net

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console,
                        disable=not main or not console.is_terminal, transient=True)  # bars only on a terminal
    with progress:
        for epoch in range(start_epoch, recipe.epochs):
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            model.train()
            frozen = epoch < recipe.freeze_backbone_epochs
            if frozen:
                net.backbone.eval()  # also keeps BatchNorm statistics fixed while the backbone is frozen
            sums, done, images_seen, started = {}, 0, 0, time.perf_counter()
            task = progress.add_task(f"epoch {epoch + 1}/{recipe.epochs}", total=steps_per_epoch, status="")
            for batch in loader:
                factor = lr_factor(step, total_steps, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = 0.0 if (frozen and group["name"] == "backbone") else group["base_lr"] * factor
                batch = batch.to(device)
                images = batch.images
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, cfg.amp):
                    outputs = model(images)
                loss, parts = net.loss(outputs, batch)
                check_finite(loss, parts, epoch, step, device)
                optimizer_step(loss, net, optimizer, scaler, recipe.grad_clip)
                if average:
                    average.update_parameters(net)
                step += 1
                done += 1
                images_seen += len(batch.images) * world
                for k, v in {"loss": loss, **parts}.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                rate = images_seen / (time.perf_counter() - started)
                status = " ".join(f"{k} {v / done:.4g}" for k, v in sums.items())
                progress.update(task, advance=1, status=f"{status} | {rate:.1f} img/s")
            progress.remove_task(task)

            row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[1]["lr"],
                   "train_images_per_s": images_seen / (time.perf_counter() - started)}
            row.update({f"train_{k}": v / max(1, steps_per_epoch) for k, v in sums.items()})
            last_epoch = epoch + 1 == recipe.epochs
            if main and splits.val and ((epoch + 1) % recipe.eval_every == 0 or last_epoch):
                if calibration_set is not None:
                    calibration_set.set_epoch(epoch)
                    recalibrate_batch_norm(kept, calibration_set, recipe.batch_size, cfg, device)
                threshold, scored = validate(kept, splits, recipe, cfg, device)
                row.update({f"val_{k}": v for k, v in scored.summary().items() if k in VAL_COLUMNS})
                row["val_selection"], row["val_threshold"] = scored.selection_loss(), threshold
                if recipe.fit_count_scale:
                    row["val_count_scale"] = kept.count_scale
            history.append(row)
            if main:
                # best_val_mae holds the selection loss: MAE, or 1 - AP for pose data
                improved = row.get("val_selection", math.inf) < best_mae
                best_mae = min(best_mae, row.get("val_selection", math.inf))
                state = {"model": kept.state_dict(), "model_name": cfg.model, "model_kwargs": cfg.model_kwargs,
                         "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                         "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "step": step,
                         "config": config_record, "history": history, "best_val_mae": best_mae,
                         "threshold": threshold, "count_scale": kept.count_scale, "provenance": origin}
                if average:  # resuming needs the weights as trained too; "model" holds the average
                    state.update(trained=net.state_dict(), average=average.state_dict())
                if improved:
                    save_checkpoint(out / "best.pt", inference_state(state))
                save_checkpoint(out / "last.pt", state)
                atomic_write(out / "metrics.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
                # One line per epoch even in a log file or CI, where rich would break it at 80 columns.
                console.print(epoch_line(row, improved), soft_wrap=True)
            if zdist.is_distributed():
                dist.barrier()

    result = {"model": cfg.model, "epochs": len(history), "checkpoint": None}
    if main:
        # This run's own checkpoint: best.pt only when this run (before a resume included) validated one.
        chosen = out / "best.pt" if math.isfinite(best_mae) else out / "last.pt"
        result.update(final_test(splits, chosen, recipe, cfg, device, console))
    return result


def training_crops(splits, stride: int, recipe, seed: int, crops_per_image: int, encoder=None) -> PointDataset:
    """The training images as the recipe augments them, `crops_per_image` crops each."""
    return PointDataset(splits.train, f"{splits.name}:train", stride=stride, train=True, encoder=encoder,
                        crop_size=recipe.crop_size, crops_per_image=crops_per_image, scale_range=recipe.scale_range,
                        flip=recipe.flip, rotate=recipe.rotate, jitter=recipe.color_jitter,
                        head_crops=recipe.head_crops, seed=seed)


@torch.no_grad()
def recalibrate_batch_norm(net, crops: PointDataset, batch_size: int, cfg: TrainConfig, device) -> None:
    """Replace every batch norm's running statistics by their mean over `crops` (drawn as in training, from the
    seed and epoch), computed with the current weights. A network without batch norm is left as it is."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch below
    was_training = net.training
    net.train()
    for batch in DataLoader(crops, batch_size=batch_size, collate_fn=collate):
        images = batch.images.to(device)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.amp):
            net(images)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)


def validate(net, splits, recipe, cfg: TrainConfig, device):
    """The validation threshold (the recipe's, or the best of its candidates) and the evaluator at it. With the
    recipe's `fit_count_scale`, a first pass at scale 1 fits `net.count_scale`, which the thresholds then see.

    Scored on a copy of `net` with batch norm folded, the graph `zoo eval` and the final test run a checkpoint
    with: under mixed precision the folded and unfolded graphs count differently, and the checkpoint is chosen on
    the numbers it will reproduce."""
    scoring = prepare_for_inference(copy.deepcopy(net))
    if cfg.channels_last:
        scoring = scoring.to(memory_format=torch.channels_last)  # folded weights come out contiguous
    candidates = recipe.threshold_candidates or (recipe.threshold,)
    key, options = f"{splits.name}:val", dict(device=device, amp=cfg.amp, channels_last=cfg.channels_last)
    if recipe.fit_count_scale:
        scoring.count_scale = 1.0
        scoring.count_scale = evaluate(scoring, splits.val, key, threshold=candidates[0], **options).count_scale()
        net.count_scale = scoring.count_scale
    scored = evaluate_thresholds(scoring, splits.val, key, thresholds=candidates, **options)
    best = min(range(len(candidates)), key=lambda k: scored[k].selection_loss())  # ties: the first candidate
    return float(candidates[best]), scored[best]


def provenance() -> dict:
    """Where a checkpoint's weights came from, beside the settings in its config record: the code's commit, the
    torch version and when the process that wrote it started."""
    from zoo.core.provenance import git_commit

    return {"git_commit": git_commit(), "torch": str(torch.__version__),  # a str subclass that weights_only refuses
            "started": datetime.now(UTC).isoformat(timespec="seconds")}


def epoch_line(row: dict, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4g}", f"{row['train_images_per_s']:.1f} img/s"]
    if "val_mae" in row:
        parts += [f"val MAE {row['val_mae']:.2f}", f"MSE {row['val_mse']:.2f}", f"F1@8 {row['val_f1_8']:.3f}"]
    if "val_count_scale" in row:
        parts.append(f"count scale {row['val_count_scale']:.3f}")
    if "val_ap" in row:
        parts += [f"val AP {row['val_ap']:.3f}", f"AP50 {row['val_ap50']:.3f}"]
    return " | ".join(parts) + (" [green](best)[/]" if improved else "")


def final_test(splits, chosen: Path, recipe, cfg: TrainConfig, device, console: Console) -> dict:
    """Test `chosen`, the checkpoint chosen on validation (the last one when there is no validation split), and
    write the results beside it."""
    out = chosen.parent
    result = {"checkpoint": str(chosen)}
    if not splits.test:
        console.print("no test split: skipping the final test")
        return result
    # Loaded as `zoo eval` loads it (load_inference), so both report the same numbers for the same checkpoint.
    run = load_inference(chosen, device=str(device), amp=cfg.amp)  # at the threshold the checkpoint records
    evaluator = evaluate(run.model, splits.test, f"{splits.name}:test", threshold=run.threshold, device=device,
                         amp=run.amp, channels_last=run.channels_last)
    evaluator.write_csv(out / "test_predictions.csv")
    summary = evaluator.summary()
    if "mae" in summary:
        console.print(f"test ({summary['images']} images, {chosen.name}): MAE {summary['mae']:.2f} | "
                      f"MSE {summary['mse']:.2f} (root of mean squared error) | F1@4 {summary['f1_4']:.3f} | "
                      f"F1@8 {summary['f1_8']:.3f}", soft_wrap=True)
    else:
        console.print(f"test ({summary['images']} persons, {chosen.name}): OKS AP {summary['ap']:.3f} | "
                      f"AP50 {summary['ap50']:.3f} | AP75 {summary['ap75']:.3f} | AR {summary['ar']:.3f}")
    if recipe.test_views > 1:
        viewed = evaluate(run.model, splits.test, f"{splits.name}:test", threshold=run.threshold, device=device,
                          amp=run.amp, channels_last=run.channels_last, views=recipe.test_views).summary()
        summary.update({"test_views": recipe.test_views, **{f"{k}_views": viewed[k] for k in VIEW_METRICS}})
        console.print(f"test, mean count of {recipe.test_views} views: MAE {summary['mae_views']:.2f} | "
                      f"MSE {summary['mse_views']:.2f}")
    atomic_write(out / "test_metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    result.update({k: v for k, v in summary.items() if k in RESULT_KEYS})
    return result
