"""`create_model`, as timm's: a registered model, with fresh weights or those of a checkpoint.

It sits above the registry and the checkpoint reader, so that neither needs the other.
"""

from __future__ import annotations

import os

from zoo.models.registry import build_model


def create_model(name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None,
                 **overrides):
    """Build the registered model `name`. `checkpoint_path` loads a zoo checkpoint or a recognized published
    checkpoint of the model's family (zoo.models.weights.convert), with the options its weights imply;
    `overrides` go to the family's constructor. A published tag (`p2pnet.shtech_a`, zoo.models.weights.hub) with
    `pretrained` loads those weights (downloaded and converted on first use); without it, the bare model."""
    from zoo.models.weights.checkpoint import model_from_checkpoint
    from zoo.models.weights.hub import split_tag

    name, tag = split_tag(name)
    if checkpoint_path is None and tag is not None and pretrained:
        checkpoint_path = tag
    if checkpoint_path is not None:
        return model_from_checkpoint(checkpoint_path, name, options=overrides)[0]
    return build_model(name, pretrained=pretrained and tag is None, **overrides)
