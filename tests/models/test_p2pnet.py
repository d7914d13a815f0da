"""P2PNet: anchors, matching, loss, padding and a learning run on synthetic blobs."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from support import blob_batches, blob_samples, fit

from zoo.core.errors import ZooError
from zoo.core.types import Batch
from zoo.metrics.counting import match_points
from zoo.models.factory import create_model
from zoo.models.families.p2pnet import P2PNet, anchor_points, match, match_cost
from zoo.models.registry import get_recipe

TAU = 0.05


@pytest.fixture(scope="module")
def model() -> P2PNet:
    torch.manual_seed(0)
    return create_model("p2pnet", backbone="vgg16", width=32).eval()


# ---------------------------------------------------------------- anchors


@pytest.mark.parametrize("height,width,grid",
                         [(16, 24, (2, 2)), (8, 8, (2, 2)), (24, 40, (3, 2)), (32, 16, (1, 4)), (48, 64, (3, 3))])
def test_anchor_points_sit_at_sub_cell_centres(height, width, grid):
    rows, cols = grid
    anchors = anchor_points(height, width, grid)
    assert anchors.shape == (2, rows * cols, height // 8, width // 8)
    for a, i, j in itertools.product(range(rows * cols), range(height // 8), range(width // 8)):
        r, c = divmod(a, cols)  # anchor a: row r, column c of its cell
        # cell (row i, column j) spans x in [8j, 8j+8), y in [8i, 8i+8), split into rows x cols sub-cells
        assert anchors[0, a, i, j].item() == pytest.approx(8 * j + (c + 0.5) * 8 / cols)
        assert anchors[1, a, i, j].item() == pytest.approx(8 * i + (r + 0.5) * 8 / rows)


def test_two_by_two_anchors_are_a_quarter_stride_around_the_cell_centre():
    anchors = anchor_points(16, 32)  # 2 rows, 4 columns of cells: x follows the columns, y the rows
    centre_x = torch.tensor([4.0, 12.0, 20.0, 28.0]).expand(2, 4)
    centre_y = torch.tensor([[4.0], [12.0]]).expand(2, 4)
    for a, (dx, dy) in enumerate([(-2, -2), (2, -2), (-2, 2), (2, 2)]):
        torch.testing.assert_close(anchors[0, a], centre_x + dx)
        torch.testing.assert_close(anchors[1, a], centre_y + dy)


def test_forward_flattens_anchors_and_offset_channels_in_the_documented_order():
    model = P2PNet(backbone="vgg16", width=16, anchor_grid=(2, 3)).eval()
    a_count = 6
    bias = model.regression[-1].bias
    with torch.no_grad():  # zero weights: offsets are the bias, x channels first then y channels
        bias[:a_count] = 0.01 * torch.arange(1, a_count + 1)
        bias[a_count:] = -0.02 * torch.arange(1, a_count + 1)
        out = model(torch.randn(1, 3, 32, 48))
    anchors = anchor_points(32, 48, (2, 3))
    hf, wf = 4, 6
    for m in range(a_count * hf * wf):
        a, cell = divmod(m, hf * wf)
        i, j = divmod(cell, wf)
        expected = anchors[:, a, i, j] + 100 * torch.tensor([0.01 * (a + 1), -0.02 * (a + 1)])
        torch.testing.assert_close(out["points"][0, m], expected, atol=1e-4, rtol=0)
    assert out["logits"].shape == (1, a_count * hf * wf)


# ---------------------------------------------------------------- matching


def naive_cost(points: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    cost = np.zeros((len(target), len(points)))
    for i, (tx, ty) in enumerate(target.tolist()):
        for j, ((px, py), c) in enumerate(zip(points.tolist(), logits.tolist(), strict=True)):
            cost[i, j] = TAU * math.hypot(tx - px, ty - py) - 1 / (1 + math.exp(-c))
    return cost


def brute_force_min_cost(cost: np.ndarray, candidates: list[int]) -> float:
    n = cost.shape[0]
    k = min(n, len(candidates))
    if k == 0:
        return 0.0
    if n <= len(candidates):
        return min(sum(cost[i, p] for i, p in enumerate(perm)) for perm in itertools.permutations(candidates, n))
    return min(sum(cost[t, candidates[j]] for j, t in enumerate(perm)) for perm in itertools.permutations(range(n), k))


def test_batch_cost_equals_a_per_pair_loop():
    torch.manual_seed(1)
    points = torch.rand(3, 7, 2) * 500
    logits = torch.randn(3, 7) * 3
    targets = [torch.rand(4, 2) * 500, torch.zeros(0, 2), torch.rand(2, 2) * 500]
    cost = match_cost(points, logits, targets, TAU)
    assert cost.shape == (3, 4, 7)
    for b, t in enumerate(targets):
        np.testing.assert_allclose(cost[b, : len(t)].numpy(), naive_cost(points[b], logits[b], t), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_matching_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    counts = [0, 1, 3, 5, 6]  # proposals M = 5 per image: N = 0, N < M, N = M and N > M
    points = torch.tensor(rng.uniform(0, 40, (len(counts), 5, 2)), dtype=torch.float32)
    logits = torch.tensor(rng.normal(0, 2, (len(counts), 5)), dtype=torch.float32)
    targets = [torch.tensor(rng.uniform(0, 40, (n, 2)), dtype=torch.float32) for n in counts]
    valid = torch.ones(len(counts), 5, dtype=torch.bool)
    valid[2, 1] = valid[4, 3] = False  # proposals on padding must never be matched
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = match(points, logits, targets, valid, TAU)
    assert len(caught) == 1 and "more heads than valid proposals" in str(caught[0].message)
    for b, (target_idx, proposal_idx) in enumerate(pairs):
        candidates = np.flatnonzero(valid[b].numpy()).tolist()
        cost = naive_cost(points[b], logits[b], targets[b])
        assert len(target_idx) == min(counts[b], len(candidates))
        assert len(set(target_idx)) == len(target_idx) and len(set(proposal_idx)) == len(proposal_idx)
        assert set(proposal_idx.tolist()) <= set(candidates)
        assert cost[target_idx, proposal_idx].sum() == pytest.approx(brute_force_min_cost(cost, candidates), abs=1e-5)


# ---------------------------------------------------------------- loss


def synthetic_outputs(seed: int, batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    anchors = anchor_points(height, width).flatten(1).T.expand(batch, -1, -1)
    return {
        "points": anchors + torch.randn(batch, anchors.shape[1], 2, generator=generator) * 3,
        "logits": torch.randn(batch, anchors.shape[1], generator=generator),
        "anchors": anchors,
    }


def test_loss_equals_a_reference_built_from_brute_force_matching():
    model = P2PNet(backbone="vgg16", width=8, lambda_neg=0.3, loc_weight=0.05)
    outputs = synthetic_outputs(0, batch=2, height=16, width=16)  # 4 cells x 4 anchors = 16 proposals
    outputs["points"] = outputs["points"][:, :6]  # keep the brute force small: 6 proposals per image
    outputs["logits"] = outputs["logits"][:, :6]
    outputs["anchors"] = outputs["anchors"][:, :6]
    targets = [torch.tensor([[3.0, 4.0], [12.0, 2.0], [7.0, 14.0]]), torch.zeros(0, 2)]
    batch = Batch(images=torch.zeros(2, 3, 16, 16), points=targets, sizes=torch.tensor([[16, 16], [16, 16]]))
    total, parts = model.loss(outputs, batch)

    points, logits = outputs["points"][0], outputs["logits"][0]
    cost = naive_cost(points, logits, targets[0])
    best = min(itertools.permutations(range(6), 3), key=lambda perm: sum(cost[i, p] for i, p in enumerate(perm)))
    loc = sum(((points[p] - targets[0][i]) ** 2).sum() for i, p in enumerate(best)) / 3
    bce = []
    for b in range(2):
        for m in range(6):
            positive = b == 0 and m in best
            p = torch.sigmoid(outputs["logits"][b, m])
            bce.append(-torch.log(p) if positive else -0.3 * torch.log(1 - p))
    cls = torch.stack(bce).sum() / 12
    torch.testing.assert_close(parts["loc"], loc)
    torch.testing.assert_close(parts["cls"], cls)
    torch.testing.assert_close(total, cls + 0.05 * loc)


def test_loss_ignores_padding_and_handles_empty_images_in_float32():
    model = P2PNet(backbone="vgg16", width=8)
    outputs = synthetic_outputs(1, batch=2, height=32, width=32)
    batch = Batch(images=torch.zeros(2, 3, 32, 32), points=[torch.tensor([[5.0, 5.0]]), torch.zeros(0, 2)],
                  sizes=torch.tensor([[16, 20], [32, 32]]))
    total, parts = model.loss(outputs, batch)
    padding = ~model.valid_proposals(outputs, batch.sizes)
    assert padding[0].sum() > 0 and padding[1].sum() == 0
    changed = dict(outputs, logits=outputs["logits"].masked_fill(padding, 9.0))
    changed["points"] = torch.where(padding[..., None], torch.full_like(outputs["points"], 5.0), outputs["points"])
    torch.testing.assert_close(model.loss(changed, batch)[0], total)  # padding proposals neither match nor count

    empty = Batch(images=batch.images, points=[torch.zeros(0, 2)] * 2, sizes=batch.sizes)
    logits = outputs["logits"].clone().requires_grad_(True)
    empty_total, empty_parts = model.loss(dict(outputs, logits=logits), empty)
    empty_total.backward()
    assert empty_parts["loc"] == 0
    assert (logits.grad[~padding] > 0).all()  # every real proposal is pushed towards "no head"

    low = dict(outputs, logits=outputs["logits"].bfloat16())
    low_total, _ = model.loss(low, batch)
    assert low_total.dtype == torch.float32
    torch.testing.assert_close(low_total, model.loss(dict(outputs, logits=low["logits"].float()), batch)[0])


# ---------------------------------------------------------------- padding, decoding, registry


def test_padded_inputs_give_predictions_inside_the_real_content(model):
    images = torch.randn(2, 3, 112, 96)  # real content 100x90 and 112x96, padded by the data layer
    sizes = torch.tensor([[100, 90], [112, 96]])
    with torch.no_grad():
        model.regression[-1].bias[:4] = 0.5  # push every proposal 50 px right: past the content's edge
        outputs = model(images)
        model.regression[-1].bias.zero_()
    assert outputs["points"].shape == (2, 4 * 14 * 12, 2) and outputs["logits"].shape == (2, 4 * 14 * 12)
    predictions = model.decode(outputs, sizes, threshold=0.0)  # keep every proposal on real content
    # anchors lie at 4k + 2 along each axis: 22 of them left of x = 90, 25 above y = 100
    assert predictions[0].count == 22 * 25 and predictions[1].count == 24 * 28
    for prediction, (height, width) in zip(predictions, sizes.tolist(), strict=True):
        assert len(prediction.points) == prediction.count == len(prediction.scores)
        assert (prediction.points >= 0).all()
        assert (prediction.points[:, 0] <= width).all() and (prediction.points[:, 1] <= height).all()
    probabilities = torch.sigmoid(outputs["logits"])
    soft = model.soft_counts(outputs, sizes)
    torch.testing.assert_close(soft[1], probabilities[1].sum())
    inside = (outputs["anchors"][0, :, 0] < 90) & (outputs["anchors"][0, :, 1] < 100)
    torch.testing.assert_close(soft[0], probabilities[0][inside].sum())


def test_input_sides_must_be_multiples_of_16(model):
    with pytest.raises(ZooError, match="multiples of 16"):
        model(torch.zeros(1, 3, 100, 96))


def test_registry_builds_both_backbones_and_rejects_unknown_options():
    plain = create_model("p2pnet", backbone="vgg16", width=8)
    with_bn = create_model("p2pnet", backbone="vgg16_bn", width=8, anchor_grid=(3, 3))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.backbone.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.backbone.modules())
    assert len(plain.backbone.features) == 30 and len(with_bn.backbone.features) == 43
    assert with_bn.classification[-1].out_channels == 9 and with_bn.regression[-1].out_channels == 18
    with pytest.raises(ZooError, match="unknown option"):
        create_model("p2pnet", anchors=3)
    with pytest.raises(ZooError, match="anchor_grid must be two positive integers"):
        create_model("p2pnet", anchor_grid=3)
    with pytest.raises(ZooError, match="unknown backbone"):
        create_model("p2pnet", backbone="resnet50")
    recipe = get_recipe("p2pnet")
    assert (recipe.optimizer, recipe.lr, recipe.batch_size, recipe.crops_per_image, recipe.crop_size) == (
        "adam", 1e-4, 8, 4, 128)
    assert recipe.grad_clip == 0.1 and recipe.flip and recipe.scale_range == (0.7, 1.3)


# ---------------------------------------------------------------- learning on synthetic blobs


def f1_score(predicted: list[np.ndarray], truths: list[torch.Tensor], radius: float) -> float:
    hits = sum(match_points(p, t.numpy(), radius) for p, t in zip(predicted, truths, strict=True))
    claimed, present = sum(len(p) for p in predicted), sum(len(t) for t in truths)
    return 2 * hits / max(claimed + present, 1)


def axis_residuals(points: list[np.ndarray], anchors: list[np.ndarray], truths: list[torch.Tensor]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean |x| and |y| errors of the kept points matched one-to-one to true heads within 8 px, and of the
    same proposals' anchors: per axis, so that a regression that learned only x (or only y) shows."""
    point_errors, anchor_errors = [], []
    for p, a, t in zip(points, anchors, truths, strict=True):
        t = t.numpy()
        if not len(p) or not len(t):
            continue
        distance = np.linalg.norm(p[:, None] - t[None], axis=2)
        rows, cols = linear_sum_assignment(distance)
        near = distance[rows, cols] <= 8
        point_errors.append(np.abs(p[rows[near]] - t[cols[near]]))
        anchor_errors.append(np.abs(a[rows[near]] - t[cols[near]]))
    return np.concatenate(point_errors).mean(0), np.concatenate(anchor_errors).mean(0)


def evaluate(model: P2PNet, batch: Batch) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        outputs = model(batch.images)
    model.train()
    predictions = model.decode(outputs, batch.sizes)
    kept = model.valid_proposals(outputs, batch.sizes) & (torch.sigmoid(outputs["logits"]) > model.threshold)
    truth = np.array([len(t) for t in batch.points])
    # the same kept proposals placed on their anchors: what the points would be without regression
    anchors = [a[k].numpy() for a, k in zip(outputs["anchors"], kept, strict=True)]
    points = [p[k].numpy() for p, k in zip(outputs["points"], kept, strict=True)]
    result = {
        "mae": float(np.abs(np.array([p.count for p in predictions]) - truth).mean()),
        "f1_8": f1_score([p.points for p in predictions], batch.points, 8),
        "f1_3": f1_score([p.points for p in predictions], batch.points, 3),
        "f1_3_anchors": f1_score(anchors, batch.points, 3),
    }
    if any(len(p) for p in points):
        (result["x_error"], result["y_error"]), (result["x_error_anchors"], result["y_error_anchors"]) = (
            axis_residuals(points, anchors, batch.points))
    return result


def train_on_blobs(steps: int, lr: float, backbone_lr: float, **overrides) -> tuple[P2PNet, list[float], dict, dict]:
    torch.manual_seed(0)
    model = create_model("p2pnet", **overrides)
    train = blob_batches(blob_samples(64, seed=1), 8)
    held_out = blob_batches(blob_samples(32, seed=2), 32)[0]
    before = evaluate(model, held_out)
    head = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimizer = torch.optim.Adam([{"params": model.backbone_parameters(), "lr": backbone_lr},
                                  {"params": head, "lr": lr}])
    losses = fit(model, train, optimizer, steps, get_recipe("p2pnet").grad_clip)
    mean_count = np.mean([len(t) for b in train for t in b.points])
    baseline = float(np.abs(mean_count - np.array([len(t) for t in held_out.points])).mean())
    return model, losses, before, dict(evaluate(model, held_out), baseline=baseline)


def test_short_training_lowers_the_loss_and_learns_to_count_and_find_blobs():
    # The real network (VGG-16-BN trunk) with slim 64-channel neck and heads, and a learning rate raised
    # to 3e-4. The classifier switches on between steps 40 and 60 here (seeds 1-6; MAE 1.0-1.8 at step 80), but a
    # CI machine's kernels once left MAE at 3.1 after 80 steps: 100 steps leave room for a later switch.
    # Margins that a broken loss cannot meet (checked: a sign-flipped classification loss, or a localization
    # loss without its y term, fails them).
    _, losses, before, after = train_on_blobs(100, lr=3e-4, backbone_lr=3e-4, width=64)
    assert min(losses) > 0
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert after["mae"] < 0.7 * after["baseline"], after
    assert after["f1_8"] > before["f1_8"] + 0.3
    assert after["f1_3"] > after["f1_3_anchors"] + 0.1  # the regression moved points onto the blobs
    # ... on both axes: each residual below the anchors' own (0.47-0.80 of them over seeds and machines; an axis
    # the loss ignores stays on its anchors, 1.0)
    assert after["x_error"] < 0.9 * after["x_error_anchors"], after
    assert after["y_error"] < 0.9 * after["y_error_anchors"], after


@pytest.mark.slow
def test_recipe_training_counts_better_than_the_mean():
    recipe = get_recipe("p2pnet")
    _, losses, before, after = train_on_blobs(150, lr=recipe.lr, backbone_lr=recipe.backbone_lr)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert after["mae"] < after["baseline"]
    assert after["f1_8"] > before["f1_8"] + 0.5
