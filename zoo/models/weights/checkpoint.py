"""Checkpoints: written atomically, read safely (`weights_only=True`), checked against the model they load into.

A checkpoint is a plain dict of tensors and Python values. A run's `last.pt` holds the whole training state:
    model, model_name, model_kwargs, optimizer, scaler, torch_rng, epoch, step, config, history, best_val_mae,
    threshold, count_scale, provenance
its `best.pt` only what inference reads (`inference_state`): the same without optimizer, scaler and torch_rng.
`provenance` says where the weights came from: for a training run its commit, torch version and start time; for a
file converted from a published checkpoint (zoo convert) the source file name, sha256, layout, packing and
preprocessing. Reading (`resolve_checkpoint`, `model_from_checkpoint`) accepts zoo checkpoints of either layout
(older full ones included) and the published layouts zoo.models.weights.convert recognizes; every `--weights` goes
through `model_from_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write, read_torch
from zoo.models.registry import build_model, family_module, get_entry
from zoo.models.weights.convert import convert, merge_options


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# What evaluation, prediction and fine-tuning read: the weights, the model they fit, the recorded training
# settings (mixed precision, memory format, data, seed), the decision threshold and count scale chosen on
# validation and where they came from.
INFERENCE_KEYS = ("model", "model_name", "model_kwargs", "config", "epoch", "step", "history", "best_val_mae",
                  "threshold", "count_scale", "provenance")


def inference_state(state: dict) -> dict:
    """`state` without what only resuming needs (the optimizer's moments, the gradient scaler, the RNG): for an
    Adam-trained model the file shrinks to about a third."""
    return {key: state[key] for key in INFERENCE_KEYS if key in state}


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by the zoo (for resuming: with optimizer and history)."""
    state = read_torch(path)
    if not isinstance(state, dict) or "model" not in state:
        raise ZooError(f"{path}: not a crowd-zoo checkpoint (no 'model' entry)")
    return state


def resolve_checkpoint(path: Path | str, name: str | None = None, options: dict | None = None,
                       trust_pickle: bool = False) -> dict:
    """Any accepted weights file as a zoo checkpoint dict: a zoo checkpoint as it is, a published checkpoint
    (or a bare state dict) converted for model `name` (see zoo.models.weights.convert)."""
    raw = read_torch(path, trust_pickle)
    if isinstance(raw, dict) and "model_name" in raw and isinstance(raw.get("model"), dict):
        return raw
    if name is None:
        raise ZooError(f"{path}: not a zoo checkpoint, so it does not record its model; name the model "
                       "(e.g. zoo eval p2pnet --weights FILE)")
    return convert(raw, name, Path(path), options)


def load_model_state(model: torch.nn.Module, state: dict, source: Path | str) -> None:
    """Load weights, naming the first mismatch (another model's checkpoint, or other shapes) in the error."""
    own = model.state_dict()
    weights = state["model"]
    recorded, built = state.get("model_name"), getattr(model, "registry_name", None)
    if recorded and built and recorded != built and get_entry(recorded).family != get_entry(built).family:
        raise ZooError(f"{source}: checkpoint is for model {recorded!r}, not {built!r}")
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
    """The model a weights file holds, ready on `device` in eval mode, and the checkpoint dict.

    A zoo checkpoint rebuilds the registered model it records (or `name`, a model of the same family) with its
    recorded options; a published one is converted. `options` add constructor options; those the weights imply
    (the family's `implied_options`, e.g. batch norm) win over recorded ones and are noted in state["notes"].
    The count scale fitted on validation, if the checkpoint records one, is set on the model.
    """
    state = resolve_checkpoint(path, name, options, trust_pickle)
    recorded = state.get("model_name")
    name = name or recorded
    if recorded is not None and get_entry(recorded).family != get_entry(name).family:
        raise ZooError(f"{path}: checkpoint is for model {recorded!r} ({get_entry(recorded).family} family), "
                       f"not {name!r} ({get_entry(name).family} family)")
    hook = getattr(family_module(name), "implied_options", None)
    implied = hook(state["model"], name) if hook else {}
    record = state.get("model_kwargs", {})
    notes = [f"{path}: its weights imply {k}={v!r}, which {name} does not have by default; built with it"
             for k, v in implied.items() if record.get(k) != v]
    kwargs = {**record, **merge_options(options or {}, implied, path)}
    model = build_model(name, **kwargs)
    load_model_state(model, state, path)
    model.count_scale = float(state.get("count_scale", 1.0))
    return model.to(device).eval(), {**state, "notes": state.get("notes", []) + notes}
