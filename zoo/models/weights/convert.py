"""Published checkpoints into zoo checkpoints: unwrap, recognize the layout, rename, record where it came from.

Accepted: `{'model': sd}` (official P2PNet, lwcc), `{'state_dict': sd, 'epoch', 'arch', ...}` (CSRNet-pytorch),
`{'net': sd, ...}` (C-3-Framework's latest_state), `{'model_state_dict': sd}` and bare state dicts, with
`module.`, `CCN.` or `CCN.module.` prefixes. The family modules know their published key layouts
(`from_published`, see zoo.models.weights.published); this module never looks at a model's name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.core.files import sha256
from zoo.models.registry import build_model, family_module, get_entry, list_models
from zoo.models.weights.published import Converted

WRAPPERS = ("model", "state_dict", "net", "model_state_dict")  # where training scripts put the weights
PREFIXES = ("module.", "CCN.")  # DataParallel / DDP, C-3-Framework (both: `CCN.module.`)


def bare_weights(raw, source) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict a loaded file holds, without wrapper or prefixes, and how it was packed."""
    packing = []
    if isinstance(raw, dict):
        for key in WRAPPERS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                packing.append(f"{{'{key}': ...}}")
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ZooError(f"{source}: no state dict (a dict of tensors) in this file, nor under any of "
                       f"{', '.join(WRAPPERS)}")
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in raw):
                raw = {k[len(prefix):]: v for k, v in raw.items()}
                packing.append(f"'{prefix}' prefix")
                stripped = True
    return raw, ", ".join(packing) or "bare state dict"


def convert(raw, name: str, source: Path, options: dict | None = None) -> dict:
    """The fields of a zoo checkpoint (model_name, weights, model_kwargs, source: what zoo.models.weights.checkpoint
    builds its Checkpoint from) out of the loaded contents of a file that is not one: a published checkpoint of
    `name`'s family, or a bare zoo state dict."""
    weights, packing = bare_weights(raw, source)
    own = family_module(name)
    converted = _recognize(own, weights, source)
    if converted is None:
        fresh = build_model(name, **(options or {})).state_dict()
        if set(weights) == set(fresh):
            converted = Converted(weights, {}, "zoo state dict", "as trained in the zoo")
        else:
            raise _not_recognized(name, weights, source)
    converted.state = with_batch_counters(converted.state)
    kwargs = merge_options(options or {}, converted.options, source)
    check_shapes(converted, build_model(name, **kwargs).state_dict(), source)
    origin = {"file": Path(source).name, "sha256": sha256(Path(source)), "layout": converted.layout,
              "packing": packing, "preprocessing": converted.preprocessing}
    return {"model_name": name, "weights": converted.state, "model_kwargs": kwargs, "source": origin}


def _recognize(module, weights: dict, source) -> Converted | None:
    hook = getattr(module, "from_published", None)
    if hook is None:
        return None
    try:
        return hook(weights)
    except ZooError as exc:
        raise ZooError(f"{source}: {exc}") from None


def _not_recognized(name: str, weights: dict, source) -> ZooError:
    """The error for a file `name`'s family cannot read: another family's checkpoint, or an unknown layout."""
    asked = get_entry(name).family
    for other in list_models():
        module = family_module(other)
        if get_entry(other).family == asked or not hasattr(module, "from_published"):
            continue
        try:
            found = module.from_published(weights)
            layout = None if found is None else f"{found.layout} layout"
        except ZooError:  # partly its layout: still the family it looks like
            layout = "part of its published layout"
        if layout is not None:
            return ZooError(f"{source}: looks like a {other} checkpoint ({layout}, {get_entry(other).family} "
                            f"family), not one for {name} ({asked} family)")
    expected = ", ".join(getattr(family_module(name), "PUBLISHED_KEYS", ()))
    return ZooError(f"{source}: unknown layout for {name}: keys start {', '.join(list(weights)[:3])}; expected a "
                    f"zoo checkpoint" + (f" or published keys like {expected}" if expected else ""))


def merge_options(asked: dict, implied: dict, source) -> dict:
    """The user's options with those the checkpoint implies; a contradiction is an error."""
    for key, value in implied.items():
        if key in asked and asked[key] != value:
            raise ZooError(f"{source}: the checkpoint implies {key}={value!r}, but {key}={asked[key]!r} was asked")
    return {**asked, **implied}


def with_batch_counters(state: dict) -> dict:
    """PyTorch before 0.4.1 saved BatchNorm without `num_batches_tracked`; add the counters it lacks."""
    missing = {k.removesuffix("running_mean") + "num_batches_tracked" for k in state if k.endswith("running_mean")}
    return {**{k: torch.tensor(0) for k in missing - set(state)}, **state}


def check_shapes(converted: Converted, own: dict, source) -> None:
    for key, value in converted.state.items():
        if key in own and value.shape != own[key].shape:
            where = converted.origin.get(key, key)
            raise ZooError(f"{source}: {where} has shape {tuple(value.shape)} in the checkpoint, the model expects "
                           f"{tuple(own[key].shape)} (as {key})")
