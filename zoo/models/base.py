"""The one interface every model family implements; the trainer, evaluator and harness call only this.

A family module holds its network, its target encoding (points -> whatever its loss needs), its loss and its
decoding (network outputs -> count and points). Shared code never looks at a model's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from zoo.core.errors import ZooError
from zoo.core.types import Batch, Prediction, TargetEncoder


class CrowdModel(nn.Module):
    """Base class of every registered network."""

    #: input height and width are padded to a multiple of this before the forward pass
    stride: int = 8
    #: pixels of context a stride-aligned block of the input needs around it for its decoded outputs to be those of
    #: the whole image: how far beyond the block an input pixel can change its outputs (the receptive field's reach)
    #: plus the one map cell a 3x3 decoding neighbourhood reads, rounded up to a multiple of `stride`. Tiled
    #: inference (zoo.inference.tiling) takes it as the least overlap; None: unknown, and the model is never tiled.
    receptive_context: int | None = None
    #: multiplies the count (and the dense map it is summed from) in `decode`, for a family whose count is a map's
    #: sum (`count_is_sum`). The trainer fits it on validation when the recipe says `fit_count_scale`, and
    #: checkpoints record it as they record the threshold: such a count can be right in its shape and wrong in its
    #: level, shared by every image (a number of points has no such level).
    count_scale: float = 1.0
    count_is_sum: bool = False

    def target_encoder(self) -> TargetEncoder | None:
        """Encoder run on each training sample, or None when the loss works from `batch.points` directly."""
        return None

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its named components (detached or not; the trainer logs them)."""
        raise NotImplementedError

    def decode(self, outputs: dict[str, Tensor], sizes: Tensor, threshold: float) -> list[Prediction]:
        """Counts and points per image; predictions on padding (outside `sizes`) are dropped."""
        raise NotImplementedError

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters that get the recipe's backbone learning rate (and can be frozen)."""
        return self.backbone.parameters()

    @torch.no_grad()
    def predict(self, images: Tensor, sizes: Tensor, threshold: float) -> list[Prediction]:
        return self.decode(self(images), sizes, threshold)


def checked_options(name: str, constructor, options: dict) -> dict:
    """`options` when `constructor` accepts them all (`pretrained` is the builder's own argument), else a ZooError
    naming the unknown ones and the known ones."""
    known = set(inspect.signature(constructor).parameters) - {"self", "pretrained"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ZooError(f"{name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return options
