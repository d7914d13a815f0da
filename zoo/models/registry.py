"""timm-style model registry: `register_model`, `create_model`, `list_models`, `get_recipe`.

Each entry carries its family's default training `Recipe`, so the trainer reads hyper-parameters from
the registry and never branches on a model's name.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from zoo.core.errors import ZooError


@dataclass(frozen=True)
class Recipe:
    """Default training recipe of a registered model. Every field can be overridden by the trainer's flags."""

    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-4  # learning rate of everything but the backbone
    backbone_lr: float = 1e-5
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    epochs: int = 20
    batch_size: int = 8  # images per step
    crops_per_image: int = 1  # random crops taken from each image (batch = batch_size * crops_per_image)
    crop_size: int = 128
    scale_range: tuple[float, float] = (0.7, 1.3)
    flip: bool = True
    rotate: bool = False  # random quarter turns too: for images with no up (cells), not for street scenes
    color_jitter: float = 0.2  # max relative change of brightness, contrast and saturation
    # Share of training crops placed to hold a head drawn at random from the image's (the rest anywhere): on
    # photos whose heads fill a small part of the frame, most random crops hold nobody.
    head_crops: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    warmup_epochs: int = 1
    freeze_backbone_epochs: int = 0  # train only neck and heads first (the P2PNet notes' fine-tuning strategy)
    threshold: float = 0.5  # decision threshold used by `decode`
    # Thresholds tried at each validation (one forward pass decodes them all): the one with the best validation
    # score decodes that checkpoint and is recorded in it. Empty: `threshold` always.
    threshold_candidates: tuple[float, ...] = ()
    # Fit the model's `count_scale` at each validation (sum of the true counts over the sum of the predicted ones,
    # at scale 1), then score and record the checkpoint at that scale. Only for a count that is a map's sum.
    fit_count_scale: bool = False
    eval_every: int = 1
    # Before each validation, batch norm's running statistics (an average over the last ~10 batches at torch's
    # momentum 0.1: noisy) are recomputed with the current weights over this many training crops per image,
    # augmented as in training. 0 keeps the running averages.
    bn_recalibration: int = 0
    # Validate, keep and test an exponential moving average of the weights (this decay per optimizer step, so
    # about 1 / (1 - decay) steps averaged) instead of the weights of the last step, which batches of 8 crops
    # push around. 0: the weights as trained.
    ema_decay: float = 0.0
    # Stop once this many validations in a row have not improved the selection metric (the checkpoint kept is
    # the best one so far). 0: train every epoch.
    early_stop: int = 0
    # The final test also scores the mean count over this many views of each test image (zoo.inference.evaluate.VIEWS: 2
    # adds the left-right flip, 4 the up-down flip and half turn, 8 the quarter turns), beside the image as given.
    # Validation always scores the image as given. 1: no second score.
    test_views: int = 1

    def override(self, **changes) -> Recipe:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ZooError(f"unknown recipe field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable | str  # the builder, or "package.module:function", imported when a model is built
    recipe: Recipe
    family: str
    description: str = ""

    @property
    def module(self) -> str:
        """The module of the builder: its family's module (with the family's checkpoint hooks)."""
        return self.builder.partition(":")[0] if isinstance(self.builder, str) else self.builder.__module__

    def build(self, **kwargs):
        builder = self.builder
        if isinstance(builder, str):
            module, _, function = builder.partition(":")
            builder = getattr(importlib.import_module(module), function)
        return builder(**kwargs)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, recipe: Recipe, family: str, description: str = "",
                   builder: str | None = None):
    """Register `builder` ("package.module:function", imported on first use, so listing costs no import) or,
    used as a decorator, the decorated `fn(pretrained: bool = False, **kwargs) -> CrowdModel`."""

    def wrap(fn):
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        doc = description or ("" if isinstance(fn, str) else (fn.__doc__ or "").strip().split("\n")[0])
        _REGISTRY[key] = ModelEntry(key, fn, recipe, family, doc)
        return fn

    return wrap(builder) if builder is not None else wrap


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def build_model(name: str, pretrained: bool = False, **overrides):
    """A registered model with fresh weights (or ImageNet-initialized trunk weights with `pretrained`).
    `overrides` go to the family's constructor and are recorded on the model (`registry_name`,
    `registry_kwargs`) so checkpoints can rebuild it. Users call `zoo.create_model`, which also loads weights."""
    model = _entry(name).build(pretrained=pretrained, **overrides)
    model.registry_name = name
    model.registry_kwargs = dict(overrides)
    return model


def family_module(name: str):
    """The module of a registered model's family: it holds the family's checkpoint hooks (`from_published`,
    `implied_options`)."""
    return importlib.import_module(_entry(name).module)


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_recipe(name: str) -> Recipe:
    return _entry(name).recipe


def get_entry(name: str) -> ModelEntry:
    return _entry(name)


def unregister_model(name: str) -> None:
    """Remove a registered model (tests register throwaway ones)."""
    _REGISTRY.pop(name, None)


def is_registered(name: str) -> bool:
    return name in _REGISTRY
