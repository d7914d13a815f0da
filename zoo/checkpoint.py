"""Checkpoints: written atomically, read safely (`weights_only=True`), checked against the model they load into.

A checkpoint is a plain dict of tensors and Python values. A run's `last.pt` holds the whole training state:
    model, model_name, model_kwargs, optimizer, scaler, torch_rng, epoch, step, config, history, best_val_mae,
    provenance
its `best.pt` only what inference reads (`inference_state`): the same without optimizer, scaler and torch_rng.
Checkpoints of either layout, older full ones included, load everywhere a checkpoint is read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from zoo.errors import ZooError


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename over `path`: a crash or a full disk never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results should be as readable as any new file
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# What evaluation, prediction and fine-tuning read: the weights, the model they fit, the recorded training
# settings (threshold, mixed precision, memory format, data, seed) and where they came from.
INFERENCE_KEYS = ("model", "model_name", "model_kwargs", "config", "epoch", "step", "history", "best_val_mae",
                  "provenance")


def inference_state(state: dict) -> dict:
    """`state` without what only resuming needs (the optimizer's moments, the gradient scaler, the RNG): for an
    Adam-trained model the file shrinks to about a third."""
    return {key: state[key] for key in INFERENCE_KEYS if key in state}


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding pickled code
        raise ZooError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ZooError(f"{path}: not a crowd-zoo checkpoint (no 'model' entry)")
    return state


def load_model_state(model: torch.nn.Module, state: dict, source: Path | str) -> None:
    """Load weights, naming the first mismatch (another model's checkpoint, or other shapes) in the error."""
    own = model.state_dict()
    weights = state["model"]
    if state.get("model_name") and getattr(model, "registry_name", None) not in (None, state["model_name"]):
        raise ZooError(f"{source}: checkpoint is for model {state['model_name']!r}, not {model.registry_name!r}")
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


def model_from_checkpoint(path: Path, name: str | None = None, device: str = "cpu"):
    """Rebuild the registered model a checkpoint was trained as (its name and constructor overrides)."""
    from zoo.registry import create_model

    state = load_checkpoint(path)
    recorded = state.get("model_name")
    if name is None and recorded is None:
        raise ZooError(f"{path}: the checkpoint does not record its model; pass the model name")
    if name is not None and recorded is not None and name != recorded:
        raise ZooError(f"{path}: checkpoint is for model {recorded!r}, not {name!r}")
    model = create_model(name or recorded, **state.get("model_kwargs", {}))
    load_model_state(model, state, path)
    return model.to(device).eval(), state
