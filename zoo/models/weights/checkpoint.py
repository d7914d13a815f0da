"""Checkpoints: one typed record (`Checkpoint`), written by one writer, read by one reader that migrates every
earlier layout, checked against the model it loads into.

A file is a plain dict of tensors and Python values, `{"format": "crowd-zoo-checkpoint", "version": 1, ...}` with
one entry per `Checkpoint` field (`notes` excepted: they describe one loading, not the weights), read safely
(`weights_only=True`) unless the caller trusts the file. A run's `last.pt` holds the resume state as well
(optimizer, scaler, RNG, the trained weights beside a moving average, epoch and step); its `best.pt` and files
written by `zoo convert` do not (`save(..., for_inference=True)`).

`Checkpoint.load` reads, besides version 1:
- version 0, the untyped dicts written before this format (a run's best.pt / last.pt, with a `config` record and
  `best_val_mae`, which held 1 - AP for pose; and `zoo convert`'s files, whose `provenance` named the source);
- published checkpoints and bare state dicts, converted for a named model (zoo.models.weights.convert);
- published tags (`p2pnet.shtech_a`, zoo.models.weights.hub): the file is fetched and converted once, and the
  converted checkpoint kept in the cache.
Every `--weights` goes through `model_from_checkpoint`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write, read_torch
from zoo.core.provenance import device_name, git_commit
from zoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from zoo.metrics.names import METRICS
from zoo.models.registry import build_model, family_module, get_entry, get_recipe
from zoo.models.weights import hub
from zoo.models.weights.convert import convert, merge_options

FORMAT = "crowd-zoo-checkpoint"
FORMAT_VERSION = 1

# What only resuming a run needs; `save(for_inference=True)` leaves it out (for an Adam-trained model the file
# shrinks to about a third).
RESUME_FIELDS = ("optimizer", "scaler", "torch_rng", "trained", "average", "epoch", "step")
# What the `source` of converted weights records.
SOURCE_KEYS = ("file", "sha256", "layout", "packing", "preprocessing")


def imagenet_normalization() -> dict:
    """The input mean and std (RGB, images scaled to [0, 1]) every zoo model is fed with (zoo.data.transforms)."""
    # str() of a float32 is its shortest decimal (0.485), not the float64 nearest the float32 (0.48500001...)
    return {"mean": [float(str(v)) for v in IMAGENET_MEAN], "std": [float(str(v)) for v in IMAGENET_STD]}


@dataclass
class Selection:
    """How the checkpoint was chosen: the validation metric (a key of zoo.metrics.names.METRICS), which way is
    better, its best value and the epoch that reached it (None before any validation)."""

    metric: str
    best: float | None = None
    epoch: int | None = None
    direction: str = ""  # "lower" | "higher"; filled in from METRICS

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ZooError(f"unknown selection metric {self.metric!r}; known: {', '.join(METRICS)}")
        expected = METRICS[self.metric].direction
        if self.direction and self.direction != expected:
            raise ZooError(f"selection metric {self.metric!r} is better when {expected}, not {self.direction}")
        self.direction = expected

    def improved_by(self, value: float) -> bool:
        """Whether `value` of the metric beats the best so far (any finite value beats none)."""
        if not math.isfinite(value):
            return False
        return self.best is None or METRICS[self.metric].better(value, self.best)


@dataclass
class Checkpoint:
    """Weights, the model they fit and what is known about how they were made.

    `training` records the run's settings and progress under plain keys: data, format, seed, amp, device,
    channels_last, world_size, epochs (done), steps (done), images_seen, protocol (a benchmark budget's name, or
    None), and whatever else the trainer records (init_from, val_fraction, ...). `history` holds one row per
    epoch, `results` the result rows the run produced (e.g. its final test summary). `source` describes converted
    published weights (file, sha256, layout, packing, preprocessing) and is None for trained ones; `provenance`
    the code and machine that wrote them (git_commit, torch, device_name, started)."""

    model_name: str
    weights: dict[str, torch.Tensor]
    model_kwargs: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)  # the resolved Recipe as a dict; empty for converted weights
    threshold: float | None = None  # the decision threshold chosen on validation
    count_scale: float = 1.0
    count_floor: float = 0.0  # people: a frame counted below it is reported empty (zoo.inference.floor); 0: none
    normalization: dict = field(default_factory=imagenet_normalization)
    selection: Selection | None = None
    training: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    source: dict | None = None
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what loading decided; never saved
    # Resume state (last.pt only). With a moving average `weights` holds the average and `trained` the weights
    # the optimizer moves; `average` is the AveragedModel's own state.
    optimizer: dict | None = None
    scaler: dict | None = None
    torch_rng: torch.Tensor | None = None
    trained: dict[str, torch.Tensor] | None = None
    average: dict | None = None
    epoch: int | None = None
    step: int | None = None

    @property
    def resumable(self) -> bool:
        return self.optimizer is not None

    def decision_threshold(self) -> float:
        """The threshold to decode with: the one chosen on validation, else the run's recipe's, else the
        registered recipe's."""
        if self.threshold is not None:
            return float(self.threshold)
        return float(self.recipe.get("threshold", get_recipe(self.model_name).threshold))

    # ---- writing ----------------------------------------------------------------------------------------------

    def to_dict(self, *, for_inference: bool) -> dict:
        """The file's contents: plain values and tensors only, so that `weights_only=True` reads them."""
        payload = {"format": FORMAT, "version": FORMAT_VERSION}
        for f in fields(self):
            if f.name == "notes" or (for_inference and f.name in RESUME_FIELDS):
                continue
            value = getattr(self, f.name)
            payload[f.name] = asdict(value) if isinstance(value, Selection) else value
        return payload

    def save(self, path: Path | str, *, for_inference: bool) -> None:
        """Write atomically (a crash never leaves half a file); `for_inference` leaves the resume state out."""
        payload = self.to_dict(for_inference=for_inference)
        atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))

    # ---- reading ----------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str, name: str | None = None, options: dict | None = None,
             trust_pickle: bool = False) -> Checkpoint:
        """Any accepted weights file: a checkpoint of this format, an earlier zoo layout (migrated), or a
        published checkpoint / bare state dict converted for model `name` with constructor `options`; or a
        published tag (zoo.models.weights.hub), read from its converted file in the cache."""
        if hub.is_published(path):
            path = converted_published(hub.get_published(str(path)))
        raw = read_torch(path, trust_pickle)
        if isinstance(raw, dict) and "format" in raw:
            return cls.from_dict(_check_version(raw, path), path)
        if _is_v0(raw):
            return cls.from_dict(_v0_to_v1(raw), path)
        if name is None:
            raise ZooError(f"{path}: not a zoo checkpoint, so it does not record its model; name the model "
                           "(e.g. zoo eval p2pnet --weights FILE)")
        return cls.from_dict(convert(raw, name, Path(path), options), path)

    @classmethod
    def from_dict(cls, payload: dict, source: Path | str = "checkpoint") -> Checkpoint:
        """A Checkpoint from a version-1 payload (`to_dict`'s output)."""
        name, weights = payload.get("model_name"), payload.get("weights")
        if not isinstance(name, str) or not isinstance(weights, dict):
            raise ZooError(f"{source}: not a crowd-zoo checkpoint (no model_name or weights entry)")
        known = {f.name for f in fields(cls)} - {"notes"}
        values = {k: v for k, v in payload.items() if k in known and v is not None}
        if isinstance(values.get("selection"), dict):
            try:
                values["selection"] = Selection(**values["selection"])
            except (TypeError, ZooError) as exc:
                raise ZooError(f"{source}: bad selection record ({exc})") from None
        return cls(**values)

    # ---- describing -------------------------------------------------------------------------------------------

    def model_card(self) -> dict:
        """What a reader of the weights wants to know, in plain values: the model and its options, the input it
        expects, how it was trained and chosen, what it scored, and where it came from."""
        training = {k: self.training.get(k) for k in ("data", "format", "protocol", "seed", "amp", "device",
                                                       "channels_last", "world_size", "epochs", "steps",
                                                       "images_seen", "init_from") if k in self.training}
        selected = None  # the validation row the selection's best value comes from
        if self.selection and self.selection.epoch is not None:
            selected = next((dict(r) for r in self.history if r.get("epoch") == self.selection.epoch), None)
        return {"model": self.model_name, "options": dict(self.model_kwargs), "normalization": self.normalization,
                "threshold": self.threshold, "count_scale": self.count_scale,
                "count_floor": self.count_floor, "training": training or None,
                "recipe": dict(self.recipe) or None,
                "selection": asdict(self.selection) if self.selection else None, "selected_row": selected,
                "results": list(self.results),
                "source": dict(self.source) if self.source else None, "provenance": dict(self.provenance)}


def converted_published(entry: hub.Published) -> Path:
    """The zoo checkpoint of published weights in the cache: fetched, checked and converted on first use."""
    target = hub.converted_file(entry)
    if not target.is_file():
        raw = hub.fetch(entry)
        checkpoint = Checkpoint.load(raw, entry.model)
        checkpoint.source = {**(checkpoint.source or {}), **entry.source}
        checkpoint.provenance = provenance()
        checkpoint.save(target, for_inference=True)
    return target


def provenance(device: torch.device | str = "cpu") -> dict:
    """Where weights written now come from: the code's commit, the torch version, the device and when the
    process started writing them."""
    return {"git_commit": git_commit(), "torch": str(torch.__version__),  # a str subclass weights_only refuses
            "device_name": device_name(torch.device(device)),
            "started": datetime.now(UTC).isoformat(timespec="seconds")}


def _check_version(raw: dict, path) -> dict:
    if raw.get("format") != FORMAT:
        raise ZooError(f"{path}: not a crowd-zoo checkpoint (format {raw.get('format')!r})")
    version = raw.get("version")
    if not isinstance(version, int) or version < 1:
        raise ZooError(f"{path}: crowd-zoo checkpoint of unknown version {version!r}")
    if version > FORMAT_VERSION:
        raise ZooError(f"{path}: crowd-zoo checkpoint format version {version} is newer than this crowd-zoo reads "
                       f"(up to {FORMAT_VERSION}); upgrade crowd-zoo to load it")
    return raw


# ---- version 0: the untyped dicts -----------------------------------------------------------------------------

def _is_v0(raw) -> bool:
    return isinstance(raw, dict) and "model_name" in raw and isinstance(raw.get("model"), dict)


# Settings of the recorded `config["train"]` that describe the command line, not the weights.
_V0_DROPPED = ("model", "model_kwargs", "resume", "overwrite")


def _v0_to_v1(raw: dict) -> dict:
    """A version-1 payload from a version-0 dict: a run's best.pt / last.pt, or a file `zoo convert` wrote
    ({model, model_name, model_kwargs, provenance naming the source file, with its sha256, layout, packing and
    preprocessing where it was a published checkpoint})."""
    config = raw.get("config") or {}
    train = dict(config.get("train") or {})
    provenance = dict(raw.get("provenance") or {})
    source = None
    if "source" in provenance:  # zoo convert named the file it read in the provenance
        source = {"file": provenance.pop("source")}
        source.update({k: provenance.pop(k) for k in SOURCE_KEYS if k in provenance})
    training = {k: v for k, v in train.items() if k not in _V0_DROPPED}
    if "recipe" in training:
        training["recipe_overrides"] = training.pop("recipe")
    if config:
        training.update(world_size=config.get("world_size", 1), epochs=raw.get("epoch"), steps=raw.get("step"),
                        images_seen=None, protocol=None)
    kwargs = dict(raw.get("model_kwargs") or {})
    history = list(raw.get("history") or [])
    payload = {"model_name": raw["model_name"], "weights": raw["model"], "model_kwargs": kwargs,
               "recipe": dict(config.get("recipe") or {}), "threshold": raw.get("threshold"),
               "count_scale": float(raw.get("count_scale", 1.0)), "training": training, "history": history,
               "source": source, "provenance": provenance,
               "selection": _v0_selection(raw, kwargs, history) if "best_val_mae" in raw else None}
    payload.update({k: raw[k] for k in ("optimizer", "scaler", "torch_rng", "trained", "average", "epoch", "step")
                    if k in raw})
    return payload


def _v0_selection(raw: dict, kwargs: dict, history: list[dict]) -> dict:
    """`best_val_mae` was the selection loss: MAE, or 1 - AP where the model was trained on pose data (the
    trainer then recorded the data's keypoint types as `num_keypoints`, and validation logged AP)."""
    pose = "num_keypoints" in kwargs or any("val_ap" in row for row in history)
    metric, loss = ("ap" if pose else "mae"), float(raw["best_val_mae"])
    if not math.isfinite(loss):  # never validated
        return {"metric": metric}
    row = next((r for r in history if r.get("val_selection") == loss), None)
    best = row.get(f"val_{metric}") if row else None
    if best is None:
        best = 1.0 - loss if pose else loss
    return {"metric": metric, "best": float(best), "epoch": row.get("epoch") if row else None}


# ---- loading into a model ------------------------------------------------------------------------------------

def load_model_state(model: torch.nn.Module, weights: Checkpoint | dict, source: Path | str, *,
                     model_name: str | None = None) -> None:
    """Load `weights` (a Checkpoint's, or a state dict of the model `model_name`) into `model`, naming the first
    mismatch (another family's checkpoint, or other shapes) in the error."""
    if isinstance(weights, Checkpoint):
        model_name, weights = weights.model_name, weights.weights
    own = model.state_dict()
    built = getattr(model, "registry_name", None)
    if model_name and built and model_name != built and get_entry(model_name).family != get_entry(built).family:
        raise ZooError(f"{source}: checkpoint is for model {model_name!r}, not {built!r}")
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ZooError(f"{source}: checkpoint does not fit this model ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected tensors; {detail})")
    for key, value in weights.items():
        if value.shape != own[key].shape:
            raise ZooError(f"{source}: {key} has shape {tuple(value.shape)} in the checkpoint, "
                           f"{tuple(own[key].shape)} in the model")
    model.load_state_dict(weights)


def model_from_checkpoint(path: Path | str, name: str | None = None, device: str = "cpu",
                          options: dict | None = None, trust_pickle: bool = False):
    """The model a weights file holds, ready on `device` in eval mode, and its Checkpoint.

    A zoo checkpoint rebuilds the registered model it records (or `name`, a model of the same family) with its
    recorded options; a published one is converted. `options` add constructor options; those the weights imply
    (the family's `implied_options`, e.g. batch norm) win over recorded ones and are told in the checkpoint's
    `notes`. The count scale fitted on validation is set on the model.
    """
    checkpoint = Checkpoint.load(path, name, options, trust_pickle)
    recorded = checkpoint.model_name
    name = name or recorded
    if get_entry(recorded).family != get_entry(name).family:
        raise ZooError(f"{path}: checkpoint is for model {recorded!r} ({get_entry(recorded).family} family), "
                       f"not {name!r} ({get_entry(name).family} family)")
    hook = getattr(family_module(name), "implied_options", None)
    implied = hook(checkpoint.weights, name) if hook else {}
    record = checkpoint.model_kwargs
    checkpoint.notes += [f"{path}: its weights imply {k}={v!r}, which {name} does not have by default; built "
                         "with it" for k, v in implied.items() if record.get(k) != v]
    kwargs = {**record, **merge_options(options or {}, implied, path)}
    model = build_model(name, **kwargs)
    load_model_state(model, checkpoint, path)
    model.count_scale = float(checkpoint.count_scale)
    return model.to(device).eval(), checkpoint
