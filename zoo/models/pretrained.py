"""Loading pretrained backbone weights without ever touching the network.

`pretrained` is False (random init), True (torchvision's / timm's default ImageNet weights, which must
already be in the local cache) or a path to a local state-dict file. Nothing here downloads: a missing file
is a `ZooError` that says where the weights were looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.core.files import read_torch


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local .pth/.pt (loaded with weights_only=True) or .safetensors file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        state = read_torch(path, what="weights file")
    elif not path.is_file():
        raise ZooError(f"{path}: weights file not found")
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # corrupt, truncated or not a safetensors file
            raise ZooError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "format" in state and isinstance(state.get("weights"), dict):
        state = state["weights"]  # a zoo checkpoint (zoo.models.weights.checkpoint)
    elif isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # an untyped zoo checkpoint or a published training checkpoint
    if not isinstance(state, dict):
        raise ZooError(f"{path}: not a state dict")
    return state


def torchvision_weights_file(weights_enum) -> Path:
    """Where torchvision keeps the file of a weights enum (e.g. VGG16_BN_Weights.IMAGENET1K_V1)."""
    filename = os.path.basename(weights_enum.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_torchvision_weights(pretrained: bool | str | os.PathLike, weights_enum) -> dict[str, torch.Tensor] | None:
    """The state dict asked for by `pretrained`, or None for random init."""
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        path = torchvision_weights_file(weights_enum)
        if not path.is_file():
            raise ZooError(
                f"{path}: ImageNet weights {weights_enum} are not in the torchvision cache and this machine "
                "cannot download them; copy the file there, pass pretrained=PATH, or pretrained=False for random init"
            )
        return load_state_dict_file(path)
    return load_state_dict_file(pretrained)


def load_matching(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "", source: str = "") -> None:
    """Load the entries of `state` under `prefix` into `module`; shape or name mismatches are a ZooError."""
    own = module.state_dict()
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
    missing = sorted(set(own) - set(picked))
    if missing:
        raise ZooError(f"{source or 'weights'}: missing {len(missing)} tensor(s), e.g. {prefix}{missing[0]}")
    for key, value in picked.items():
        if value.shape != own[key].shape:
            raise ZooError(
                f"{source or 'weights'}: {prefix}{key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    module.load_state_dict(picked)
