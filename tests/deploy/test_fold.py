"""Batch norm folded for inference: every family's outputs equal the unfolded model's, the convolutions that feed
a batch norm and nothing else are the ones folded, and a convolution whose output is also used elsewhere is not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.deploy.fold import fold_batch_norm, foldable_pairs, prepare_for_inference
from zoo.models.factory import create_model


def randomize_statistics(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their identity initial values: folding them then changes
    every folded weight, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.4 * torch.rand(n, generator=generator) - 0.2)
    return model.eval()


def flat_outputs(outputs: dict) -> list[torch.Tensor]:
    return [t for value in outputs.values() for t in (value if isinstance(value, list) else [value])]


# (model, options, batch norms left unfolded): CPN's GlobalNet heads normalize after a resize, not a convolution
FAMILIES = [("p2pnet", {}, 0), ("csrnet_bn", {}, 0), ("csrnet", {}, 0), ("cpn_r18", {}, 4),
            ("cpn_r18", {"num_keypoints": 17}, 4)]


@pytest.mark.parametrize(("name", "options", "left"), FAMILIES, ids=[f"{n}-{o}" for n, o, _ in FAMILIES])
def test_folded_models_give_the_unfolded_outputs(name, options, left):
    torch.manual_seed(0)
    model = randomize_statistics(create_model(name, **options))
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = flat_outputs(model(images))
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    prepare_for_inference(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == left
    assert norms == 0 or left < norms  # the batch-norm families did fold
    with torch.no_grad():
        folded = flat_outputs(model(images))
    for ours, theirs in zip(folded, reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


class Branches(nn.Module):
    """conv_a feeds only its norm (foldable); conv_b's output also goes to a residual sum (not foldable); norm_c
    normalizes a resized map (no convolution feeds it directly)."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.norm_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.norm_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.conv_c, self.norm_c = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        a = torch.relu(self.norm_a(self.conv_a(x)))
        b = self.conv_b(a)
        mixed = self.norm_b(b) + b
        return self.norm_c(nn.functional.interpolate(self.conv_c(mixed), scale_factor=2.0))


def test_only_a_convolution_that_feeds_its_norm_alone_is_folded():
    model = randomize_statistics(Branches())
    images = torch.randn(1, 3, 8, 8)
    assert foldable_pairs(model, images) == [("conv_a", "norm_a")]
    with torch.no_grad():
        reference = model(images)
        assert fold_batch_norm(model, images) == 1
        torch.testing.assert_close(model(images), reference, rtol=1e-5, atol=1e-5)
    assert isinstance(model.norm_a, nn.Identity) and isinstance(model.norm_b, nn.BatchNorm2d)


def test_folding_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(Branches().train(), torch.zeros(1, 3, 8, 8))
