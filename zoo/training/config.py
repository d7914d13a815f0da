"""What a training run is asked for (`TrainConfig`, never changed once given) and what it resolves to
(`ResolvedRun`: the precision, the model options, the recipe, the ranks and the device), resolved in one place and
recorded in every checkpoint the run writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from zoo.core.errors import ZooError
from zoo.core.precision import resolve_amp
from zoo.data.dataset import Splits, is_pose, keypoint_types
from zoo.models.registry import Recipe, get_recipe


@dataclass(frozen=True)
class TrainConfig:
    model: str
    data: str = "synthetic"
    format: str = "auto"
    out: str | None = None  # default runs/<model>, or the next free runs/<model>-N (zoo/training/runs.py)
    device: str = "cpu"
    amp: str = "auto"  # auto (bf16, or off on a CPU without bf16 instructions) | bf16 | fp16 (CUDA only) | off
    channels_last: bool = False
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # replace the run already in `out` (its files are deleted first)
    init_from: str | None = None  # checkpoint whose weights start a new run (fine-tuning); ignored on resume
    workers: int = 0
    # last.pt at most this often, in seconds (0: after every epoch); always after the last epoch and an early stop.
    # A resume repeats the epochs since: deterministic, so the weights come out the same.
    checkpoint_seconds: float = 0.0
    val_fraction: float | None = None  # share of train that validates when the data has no val split
    recipe: dict = field(default_factory=dict)  # overrides of the registry recipe
    model_kwargs: dict = field(default_factory=dict)  # overrides of the model constructor


@dataclass(frozen=True)
class ResolvedRun:
    """A `TrainConfig` with every choice left to the trainer made: what the run trains in and with."""

    config: TrainConfig  # as given
    amp: str  # the autocast mode "auto" resolved to on this device
    model_kwargs: dict  # the constructor options: the config's, and num_keypoints from pose data
    recipe: Recipe  # the registry's recipe with the config's overrides
    world_size: int
    device: torch.device  # this rank's
    selection: str  # the validation metric the best checkpoint is chosen on (zoo.metrics.names)

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def per_rank_batch(self) -> int:
        return self.recipe.batch_size // self.world_size

    def training(self, **progress) -> dict:
        """The run as a checkpoint's `training` records it: the settings it trains with (the resolved precision
        and device, which evaluation and a resume read), the config as given, and `progress` (epochs, steps,
        images_seen done)."""
        config = self.config
        return {"data": config.data, "format": config.format, "seed": config.seed, "amp": self.amp,
                "device": str(self.device), "channels_last": config.channels_last, "world_size": self.world_size,
                "init_from": config.init_from, "val_fraction": config.val_fraction, "config": asdict(config),
                **progress}


def resolve_run(config: TrainConfig, device: torch.device, splits: Splits, world_size: int) -> ResolvedRun:
    """`config` resolved for `device`, its data's `splits` and `world_size` ranks, or a one-line ZooError naming
    the setting that cannot work."""
    amp = resolve_amp(config.amp, device)
    if amp == "fp16" and device.type != "cuda":
        raise ZooError("--amp fp16 needs CUDA (it uses a gradient scaler); use --amp bf16 on CPU")
    recipe = get_recipe(config.model).override(**config.recipe)
    if recipe.batch_size % world_size:
        raise ZooError(f"batch size {recipe.batch_size} is not divisible by the {world_size} ranks")
    if not 0.0 <= recipe.ema_decay < 1.0:
        raise ZooError(f"ema_decay must be in [0, 1), got {recipe.ema_decay}")
    if recipe.early_stop < 0:
        raise ZooError(f"early_stop must be 0 (off) or a number of validations, got {recipe.early_stop}")
    pose = is_pose(splits.train)
    # The data decides how many keypoint types a pose model predicts; a family without keypoints refuses it.
    model_kwargs = {"num_keypoints": keypoint_types(splits.train), **config.model_kwargs} if pose else \
        dict(config.model_kwargs)
    return ResolvedRun(config, amp, model_kwargs, recipe, world_size, device, "ap" if pose else "mae")
