"""P2PNet's Hungarian matching beyond tests/models/test_p2pnet.py: the cost against float64 at coordinates of a few
thousand pixels (where a matrix-product distance loses the sub-pixel differences that decide a match), the
too-many-heads warning, low-precision outputs, and which anchors lie inside the real content."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from zoo.models.families.p2pnet import P2PNet, anchor_points, match, match_cost

TAU = 0.05


def reference_cost(points: np.ndarray, logits: np.ndarray, target: np.ndarray, tau: float) -> np.ndarray:
    distance = np.sqrt(((target[:, None].astype(np.float64) - points[None].astype(np.float64)) ** 2).sum(-1))
    return tau * distance - 1 / (1 + np.exp(-logits.astype(np.float64)))[None]


def test_the_cost_is_exact_to_a_fraction_of_a_pixel_far_from_the_origin():
    # 40 proposals and heads near (3000, 2000), a few pixels apart: enough of them for a matrix-product
    # distance to be chosen, far enough out for its cancellation to show.
    rng = np.random.default_rng(0)
    centre = np.array([3000.0, 2000.0])
    points = (centre + rng.uniform(-4, 4, (1, 40, 2))).astype(np.float32)
    target = (centre + rng.uniform(-4, 4, (30, 2))).astype(np.float32)
    logits = rng.normal(0, 1, (1, 40)).astype(np.float32)
    cost = match_cost(torch.from_numpy(points), torch.from_numpy(logits), [torch.from_numpy(target)], tau=1.0)
    expected = reference_cost(points[0], logits[0], target, 1.0)
    np.testing.assert_allclose(cost[0].numpy(), expected, atol=2e-3)


def test_more_heads_than_valid_proposals_warns_once_per_image_and_matches_what_it_can():
    points = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [20.0, 20.0]]])
    targets = [torch.tensor([[1.0, 1.0], [8.0, 8.0], [30.0, 30.0]])]
    valid = torch.tensor([[True, True, False]])
    with pytest.warns(UserWarning) as caught:
        ((rows, cols),) = match(points, torch.zeros(1, 3), targets, valid, TAU)
    assert len(caught) == 1
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (1, 1)]


def test_as_many_heads_as_valid_proposals_does_not_warn():
    points = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ((rows, cols),) = match(points, torch.zeros(1, 2), [torch.tensor([[8.0, 9.0], [0.0, 1.0]])],
                                torch.ones(1, 2, dtype=torch.bool), TAU)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_outputs_match_as_their_float32_values(dtype):
    rng = np.random.default_rng(5)
    points = torch.tensor(rng.uniform(0, 60, (2, 6, 2))).to(dtype)
    logits = torch.tensor(rng.normal(0, 2, (2, 6))).to(dtype)
    targets = [torch.tensor(rng.uniform(0, 60, (n, 2)), dtype=torch.float32) for n in (3, 5)]
    valid = torch.ones(2, 6, dtype=torch.bool)
    low = match(points, logits, targets, valid, TAU)
    full = match(points.float(), logits.float(), targets, valid, TAU)
    for (rows, cols), (rows32, cols32) in zip(low, full, strict=True):
        assert rows.tolist() == rows32.tolist() and cols.tolist() == cols32.tolist()


def test_valid_proposals_are_the_anchors_inside_each_images_content():
    anchors = anchor_points(32, 48).flatten(1).T  # (M, 2) of (x, y)
    outputs = {"anchors": anchors.expand(2, -1, -1)}
    sizes = torch.tensor([[20, 30], [32, 48]])  # (height, width)
    valid = P2PNet.valid_proposals(outputs, sizes)
    expected = (anchors[:, 0] < 30) & (anchors[:, 1] < 20)
    assert torch.equal(valid[0], expected) and valid[1].all()
    assert not torch.equal(expected, (anchors[:, 0] < 20) & (anchors[:, 1] < 30))  # height and width differ


def test_anchor_points_cover_whole_cells_only_and_follow_the_asked_device_and_float32():
    anchors = anchor_points(20, 28, stride=8)  # 2.5 x 3.5 cells: the partial cells get no anchors
    assert anchors.shape == (2, 4, 2, 3) and anchors.dtype == torch.float32
    # cell (1, 2)'s top-left anchor sits a quarter cell up and left of its centre (20, 12)
    assert anchors[:, 0, 1, 2].tolist() == [18.0, 10.0]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the anchors stay float32 whatever the default
    try:
        assert anchor_points(16, 16, stride=8).dtype == torch.float32
    finally:
        torch.set_default_dtype(default)
    on_meta = anchor_points(16, 16, stride=8, device="meta")  # every part built on the asked device
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 4, 2, 2)


def test_match_cost_of_an_empty_batch_is_empty():
    cost = match_cost(torch.zeros(0, 5, 2), torch.zeros(0, 5), [], tau=0.05)
    assert cost.shape == (0, 0, 5)
