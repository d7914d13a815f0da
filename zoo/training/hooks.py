"""What a training run does besides its optimizer steps, one hook per concern, built from the resolved recipe in
one place (`build_hooks`), so every improvement is a recipe field any model family can use.

The loop (zoo.training.trainer) calls, in this order:
    on_train_start(run)                        once, after the weights (resumed, or initialized) are in place
    on_step_end(run)                           after each optimizer step
    on_epoch_end(run)                          after each epoch, hook by hook in `build_hooks`'s order
    on_train_end(run)                          after the final test (rank 0's `run.result` filled in)
    close(run)                                 always, also when training stopped on an error
Validation, when it is due, raises two events of its own on every hook:
    on_validation_start(run)                   on the network to be validated, before it is copied for scoring
    on_scoring(run, scoring)                   on that copy, batch norm folded, before the thresholds are scored
Hooks read and extend the `Run`: `run.row` is the epoch's metrics.csv row, `run.validated` / `run.improved` say
what this epoch's validation found, and a hook that sets `run.stop` ends training after the epoch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from zoo.core import distributed as zdist
from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.core.precision import autocast
from zoo.data.collate import collate
from zoo.data.dataset import PointDataset, Splits
from zoo.deploy.fold import prepare_for_inference
from zoo.inference.evaluate import evaluate, evaluate_thresholds
from zoo.metrics.names import METRICS, Metric, label
from zoo.models.registry import Recipe
from zoo.models.weights.checkpoint import Checkpoint, Selection, load_model_state, provenance
from zoo.training.config import ResolvedRun
from zoo.training.data import training_crops
from zoo.training.runs import check_same_run

VAL_COLUMNS = ("mae", "mse", "f1_4", "f1_8", "ap", "ap50")  # validation metrics logged per epoch (those present)
LOGGED = ("mae", "mse", "f1_8", "ap", "ap50")  # of those, the ones an epoch's log line shows


@dataclass
class Run:
    """One training run as the loop advances it and its hooks read and extend it."""

    resolved: ResolvedRun
    splits: Splits
    net: torch.nn.Module  # the network the optimizer moves (not DDP's wrapper)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    out: Path
    console: Console
    hooks: Hook  # every hook of the run, as one (Hooks)
    steps_per_epoch: int
    threshold: float
    selection: Selection  # the validation metric, its best value so far and the epoch that reached it
    epoch: int = 0  # epochs done
    step: int = 0  # optimizer steps done
    images_seen: int = 0  # training images over all ranks and epochs
    history: list[dict] = field(default_factory=list)  # one row per epoch done
    row: dict = field(default_factory=dict)  # the epoch being finished (the last of `history`)
    validated: bool = False  # this epoch was validated
    improved: bool = False  # ... and beat every earlier validation
    stop: str | None = None  # why training ends before its last epoch, when a hook decides it should
    average: AveragedModel | None = None  # the moving average of the weights (WeightAverage)
    resumed: Checkpoint | None = None  # the last.pt this run continues
    notes: list[str] = field(default_factory=list)  # lines (rich markup) to print when training starts
    result: dict = field(default_factory=dict)  # what train() returns
    # Running sums of the epoch in progress: loss terms, steps and images, and when it began
    sums: dict = field(default_factory=dict)
    done: int = 0
    epoch_images: int = 0
    epoch_started: float = 0.0

    @property
    def recipe(self) -> Recipe:
        return self.resolved.recipe

    @property
    def main(self) -> bool:
        return zdist.is_main()

    @property
    def kept(self) -> torch.nn.Module:
        """The network validated, saved as best.pt and tested: the moving average, or the trained one."""
        return self.average.module if self.average is not None else self.net

    @property
    def metric(self) -> Metric:
        return METRICS[self.selection.metric]

    def begin_epoch(self) -> None:
        self.sums, self.done, self.epoch_images, self.epoch_started = {}, 0, 0, time.perf_counter()

    def count_step(self, loss: torch.Tensor, parts: dict, images: int) -> None:
        """One optimizer step done on `images` images (over all ranks) with this loss and its terms."""
        self.step += 1
        self.done += 1
        self.epoch_images += images
        self.images_seen += images
        for k, v in {"loss": loss, **parts}.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())

    def end_epoch(self) -> None:
        """The epoch's row of metrics.csv, appended to the history; hooks add to it."""
        self.epoch += 1
        self.row = {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[1]["lr"],
                    "train_images_per_s": self.epoch_images / (time.perf_counter() - self.epoch_started)}
        self.row.update({f"train_{k}": v / max(1, self.steps_per_epoch) for k, v in self.sums.items()})
        self.history.append(self.row)


class Hook:
    """Something a run does around its optimizer steps; every event is a no-op unless a hook overrides it."""

    def on_train_start(self, run: Run) -> None:
        pass

    def on_step_end(self, run: Run) -> None:
        pass

    def on_validation_start(self, run: Run) -> None:
        pass

    def on_scoring(self, run: Run, scoring: Scoring) -> None:
        pass

    def on_epoch_end(self, run: Run) -> None:
        pass

    def on_train_end(self, run: Run) -> None:
        pass

    def close(self, run: Run) -> None:
        pass


class Hooks(Hook):
    """Hooks called in order, as one."""

    def __init__(self, hooks: list[Hook]):
        self.hooks = list(hooks)

    def on_train_start(self, run):
        for hook in self.hooks:
            hook.on_train_start(run)

    def on_step_end(self, run):
        for hook in self.hooks:
            hook.on_step_end(run)

    def on_validation_start(self, run):
        for hook in self.hooks:
            hook.on_validation_start(run)

    def on_scoring(self, run, scoring):
        for hook in self.hooks:
            hook.on_scoring(run, scoring)

    def on_epoch_end(self, run):
        for hook in self.hooks:
            hook.on_epoch_end(run)

    def on_train_end(self, run):
        for hook in self.hooks:
            hook.on_train_end(run)

    def close(self, run):
        for hook in self.hooks:
            hook.close(run)


def build_hooks(resolved: ResolvedRun, net) -> Hooks:
    """The hooks `resolved`'s recipe asks for, in the order they act on an epoch's end; a recipe option the model
    cannot take is refused here, before a run folder is claimed."""
    recipe = resolved.recipe
    hooks: list[Hook] = []
    if recipe.ema_decay:
        hooks.append(WeightAverage(recipe.ema_decay))
    if recipe.bn_recalibration:
        hooks.append(BatchNormRecalibration(recipe.bn_recalibration))
    if recipe.fit_count_scale:
        hooks.append(CountCalibration(net, resolved.model))
    hooks.append(Validation(recipe.threshold_candidates or (recipe.threshold,)))
    if recipe.early_stop:
        hooks.append(EarlyStop(recipe.early_stop))
    hooks += [Checkpointing(), Logging()]
    return Hooks(hooks)


# ---- the weights kept -----------------------------------------------------------------------------------------

class WeightAverage(Hook):
    """Keep an exponential moving average of the weights (of batch norm's statistics too), `decay` per optimizer
    step; it is what validation scores and the checkpoints keep, while the optimizer moves the trained weights."""

    def __init__(self, decay: float):
        self.decay = decay

    def on_train_start(self, run):
        run.average = AveragedModel(run.net, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        if run.resumed is not None:
            if run.resumed.average is None:
                raise ZooError(f"{run.out / 'last.pt'}: cannot resume: it holds no moving average of the weights")
            run.average.load_state_dict(run.resumed.average)

    def on_step_end(self, run):
        run.average.update_parameters(run.net)


# ---- validation -----------------------------------------------------------------------------------------------

@dataclass
class Scoring:
    """What validation scores: a copy of the kept network prepared as evaluation runs it, and how it is run."""

    model: torch.nn.Module
    records: list
    key: str
    options: dict
    threshold: float  # the first candidate

    def evaluate(self, threshold: float):
        return evaluate(self.model, self.records, self.key, threshold=threshold, **self.options)


class Validation(Hook):
    """Score the kept network on the validation split every `eval_every` epochs and after the last, on rank 0:
    each threshold candidate, on a copy with batch norm folded (the graph `zoo eval` and the final test run a
    checkpoint with: under mixed precision the folded and unfolded graphs count differently, and the checkpoint is
    chosen on the numbers it will reproduce). The best candidate decodes the checkpoint."""

    def __init__(self, candidates: tuple[float, ...]):
        self.candidates = tuple(candidates)

    def due(self, run: Run) -> bool:
        every = run.epoch % run.recipe.eval_every == 0 or run.epoch == run.recipe.epochs
        return run.main and bool(run.splits.val) and every

    def on_epoch_end(self, run):
        run.validated = run.improved = False
        if not self.due(run):
            return
        run.hooks.on_validation_start(run)
        resolved = run.resolved
        model = prepare_for_inference(copy.deepcopy(run.kept))
        if resolved.config.channels_last:
            model = model.to(memory_format=torch.channels_last)  # folded weights come out contiguous
        scoring = Scoring(model, run.splits.val, f"{run.splits.name}:val",
                          dict(device=resolved.device, amp=resolved.amp, channels_last=resolved.config.channels_last),
                          self.candidates[0])
        run.hooks.on_scoring(run, scoring)
        scored = [s.summary() for s in evaluate_thresholds(scoring.model, scoring.records, scoring.key,
                                                           thresholds=self.candidates, **scoring.options)]
        metric = run.metric
        chosen = 0  # ties: the first candidate
        for k in range(1, len(scored)):
            if metric.better(scored[k][metric.key], scored[chosen][metric.key]):
                chosen = k
        summary, run.threshold = scored[chosen], float(self.candidates[chosen])
        run.row.update({f"val_{k}": v for k, v in summary.items() if k in VAL_COLUMNS})
        run.row["val_threshold"] = run.threshold
        run.validated = True
        value = float(summary[metric.key])
        run.improved = run.selection.improved_by(value)
        if run.improved:
            run.selection = replace(run.selection, best=value, epoch=run.epoch)


class BatchNormRecalibration(Hook):
    """Before each validation, replace batch norm's running statistics (an average over the last few batches:
    noisy) by their mean over `crops_per_image` training crops of each image, drawn as in training from the seed
    and epoch, computed with the current weights."""

    def __init__(self, crops_per_image: int):
        self.crops_per_image = crops_per_image
        self.crops: PointDataset | None = None

    def on_validation_start(self, run):
        if self.crops is None:
            self.crops = training_crops(run.splits, run.net.stride, run.recipe, run.resolved.config.seed,
                                        self.crops_per_image)
        self.crops.set_epoch(run.epoch - 1)  # the epoch just trained
        recalibrate_batch_norm(run.kept, self.crops, run.recipe.batch_size, run.resolved)


@torch.no_grad()
def recalibrate_batch_norm(net, crops: PointDataset, batch_size: int, resolved: ResolvedRun) -> None:
    """Every batch norm's running statistics as their mean over `crops`; a network without batch norm is left
    as it is."""
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
        images = batch.images.to(resolved.device)
        if resolved.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(resolved.device, resolved.amp):
            net(images)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)


class CountCalibration(Hook):
    """At each validation, fit the count scale (the sum of the true validation counts over the sum of the
    predicted ones, at scale 1 and the first threshold candidate) on the copy validation scores; the thresholds
    are then scored, and the checkpoint recorded, at that scale."""

    def __init__(self, net, model_name: str):
        if not net.count_is_sum:
            raise ZooError(f"{model_name}: fit_count_scale needs a count that is a map's sum (a density, a "
                           "heatmap's mass); this model counts otherwise")

    def on_scoring(self, run, scoring):
        scoring.model.count_scale = 1.0
        scoring.model.count_scale = scoring.evaluate(scoring.threshold).count_scale()
        run.kept.count_scale = scoring.model.count_scale
        run.row["val_count_scale"] = scoring.model.count_scale


class EarlyStop(Hook):
    """Stop once `patience` validations in a row have not improved the selection metric. Counted from the
    history, so a resumed run stops where the uninterrupted one would (and one that already stopped stays so)."""

    def __init__(self, patience: int):
        self.patience = patience

    def waited(self, run: Run) -> int:
        """Validations since the best one."""
        best, since = Selection(run.selection.metric), 0
        for row in run.history:
            value = row.get(f"val_{best.metric}")
            if value is None:
                continue
            if best.improved_by(value):
                best, since = replace(best, best=value), 0
            else:
                since += 1
        return since

    def check(self, run: Run) -> None:
        if self.waited(run) >= self.patience:
            run.stop = (f"stopping early: validation {label(run.selection.metric)} has not improved in "
                        f"{self.patience} validations (best {run.selection.best:.4g} at epoch {run.selection.epoch})")

    def on_train_start(self, run):
        if run.main and run.selection.best is not None:
            self.check(run)

    def on_epoch_end(self, run):
        if run.validated:
            self.check(run)


# ---- checkpoints and logs -------------------------------------------------------------------------------------

class Checkpointing(Hook):
    """On rank 0 after every epoch: best.pt when validation improved (what inference reads), metrics.csv (the
    history) and last.pt (everything a resume needs; at most every `checkpoint_seconds` when the run asks, since
    the full training state of a large model takes a noticeable share of a short epoch to write), each written
    atomically."""

    def on_train_start(self, run):
        self.origin = provenance(run.resolved.device) if run.main else {}
        self.saved_at = time.monotonic()

    def last_due(self, run: Run) -> bool:
        every = run.resolved.config.checkpoint_seconds
        return (every <= 0 or run.stop or run.epoch >= run.recipe.epochs
                or time.monotonic() - self.saved_at >= every)

    def checkpoint(self, run: Run) -> Checkpoint:
        kept, average = run.kept, run.average
        return Checkpoint(
            model_name=run.resolved.model, weights=kept.state_dict(), model_kwargs=dict(run.resolved.model_kwargs),
            recipe=asdict(run.recipe), threshold=run.threshold, count_scale=float(kept.count_scale),
            selection=replace(run.selection),
            training=run.resolved.training(epochs=run.epoch, steps=run.step, images_seen=run.images_seen),
            history=list(run.history), provenance=self.origin,
            optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(), torch_rng=torch.get_rng_state(),
            trained=run.net.state_dict() if average is not None else None,
            average=average.state_dict() if average is not None else None, epoch=run.epoch, step=run.step)

    def on_epoch_end(self, run):
        if not run.main:
            return
        due = self.last_due(run)
        checkpoint = self.checkpoint(run) if run.improved or due else None
        if run.improved:
            checkpoint.save(run.out / "best.pt", for_inference=True)
        if due:
            checkpoint.save(run.out / "last.pt", for_inference=False)
            self.saved_at = time.monotonic()
        atomic_write(run.out / "metrics.csv", lambda tmp: pd.DataFrame(run.history).to_csv(tmp, index=False))


def restore(run: Run, path: Path) -> None:
    """Continue the run `path` (its last.pt) saved: the trained weights, optimizer, scaler, RNG, progress, history,
    threshold, count scale and selection; the moving average is WeightAverage's to restore."""
    saved = Checkpoint.load(path)
    if not saved.resumable:
        raise ZooError(f"{path}: cannot resume: it holds no training state (a best.pt or converted weights?)")
    check_same_run(saved, run.resolved, path)
    weights = saved.trained if saved.trained is not None else saved.weights
    load_model_state(run.net, weights, path, model_name=saved.model_name)
    run.optimizer.load_state_dict(saved.optimizer)
    run.scaler.load_state_dict(saved.scaler)
    torch.set_rng_state(saved.torch_rng)
    run.epoch, run.step, run.history = saved.epoch, saved.step, list(saved.history)
    run.images_seen = saved.training.get("images_seen") or 0
    if saved.selection is not None:
        run.selection = saved.selection
    if saved.threshold is not None:
        run.threshold = float(saved.threshold)
    run.net.count_scale = float(saved.count_scale)
    run.resumed = saved


class Logging(Hook):
    """What the run prints: its folder and start, a progress bar on a terminal, one line per epoch (epoch k/N,
    the training loss and images/s, the time left, then the validation numbers; one line also in a log file,
    where rich would break it at 80 columns), and at the end the checkpoint and the commands that use it."""

    def on_train_start(self, run):
        self.started, self.first_epoch = time.perf_counter(), run.epoch
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=run.console,
                                 disable=not run.main or not run.console.is_terminal, transient=True)
        self.task = None
        if run.main:
            for note in run.notes:
                run.console.print(note, highlight=False, soft_wrap=True)
        self.progress.start()

    def on_step_end(self, run):
        if self.progress.disable:
            return
        if self.task is None:
            self.task = self.progress.add_task(f"epoch {run.epoch + 1}/{run.recipe.epochs}",
                                               total=run.steps_per_epoch, status="")
        status = " ".join(f"{k} {v / run.done:.4g}" for k, v in run.sums.items())
        rate = run.epoch_images / (time.perf_counter() - run.epoch_started)
        self.progress.update(self.task, advance=1, status=f"{status} | {rate:.1f} img/s")

    def on_epoch_end(self, run):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if not run.main:
            return
        epochs = run.recipe.epochs
        left = 0.0 if run.stop else \
            (time.perf_counter() - self.started) / (run.epoch - self.first_epoch) * (epochs - run.epoch)
        run.console.print(epoch_line(run.row, epochs, left, run.improved), highlight=False, soft_wrap=True)
        if run.stop:
            run.console.print(run.stop, highlight=False, soft_wrap=True)

    def on_train_end(self, run):
        checkpoint = run.result.get("checkpoint")
        if not run.main or not checkpoint:
            return
        path = escape(str(checkpoint))
        run.console.print(f"checkpoint {path}\nnext: zoo eval --weights {path}\n"
                          f"      zoo predict --weights {path} IMAGES", highlight=False, soft_wrap=True)

    def close(self, run):
        self.progress.stop()


def epoch_line(row: dict, epochs: int, seconds_left: float, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4g}",
             f"{row['train_images_per_s']:.1f} img/s", f"{timedelta(seconds=round(seconds_left))} left"]
    shown = [key for key in LOGGED if f"val_{key}" in row]
    parts += [f"{'val ' if k == 0 else ''}{label(key)} {row[f'val_{key}']:.4g}" for k, key in enumerate(shown)]
    if "val_count_scale" in row:
        parts.append(f"count scale {row['val_count_scale']:.4g}")
    return " | ".join(parts) + (" [green](best)[/]" if improved else "")
