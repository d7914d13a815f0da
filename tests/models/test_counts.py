"""Every registered model's count is >= 0 whatever its network outputs: hard counts (points, heatmap peaks) are
numbers of points by construction, and a density's count sums a map whose negative cells are cut to 0."""

from __future__ import annotations

import pytest
import torch

from zoo.models.factory import create_model
from zoo.models.registry import get_entry, list_models


def _scaled(outputs, factor: float):
    """The outputs with every tensor multiplied by `factor` (lists of tensors included)."""
    if isinstance(outputs, torch.Tensor):
        return outputs * factor
    if isinstance(outputs, dict):
        return {k: _scaled(v, factor) for k, v in outputs.items()}
    return type(outputs)(_scaled(v, factor) for v in outputs)


# The zoo's own models, not the test-only ones other test modules may have registered by collection time.
ZOO_MODELS = [name for name in list_models() if get_entry(name).module.startswith("zoo.")]


@pytest.fixture(scope="module", params=ZOO_MODELS)
def model_and_outputs(request):
    """A registered model and its outputs on two random 32x32 images, the second one partly padding."""
    torch.manual_seed(0)
    model = create_model(request.param).eval()
    with torch.no_grad():
        return model, model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("factor", [1.0, -100.0, 100.0])
def test_count_is_never_negative(model_and_outputs, factor):
    model, outputs = model_and_outputs
    for prediction in model.decode(_scaled(outputs, factor), torch.tensor([[32, 32], [24, 16]]), 0.01):
        assert prediction.count >= 0
        if prediction.map_is_density:
            assert (prediction.dense_map >= 0).all()
            assert prediction.dense_map.sum() == pytest.approx(prediction.count, rel=1e-5, abs=1e-5)
        else:  # a hard count: the number of points found
            assert prediction.count == len(prediction.points)
