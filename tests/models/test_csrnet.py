"""CSRNet: exact density targets, the sigma cache, stride-8 shapes, and learning on synthetic blobs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import blob_batches, blob_samples, fit

from zoo.core.errors import ZooError
from zoo.core.types import Batch
from zoo.metrics.counting import match_points
from zoo.models import density as D
from zoo.models.factory import create_model
from zoo.models.families.csrnet import CSRNet
from zoo.models.registry import get_entry


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Sigma caches go to a fresh data dir, never the checkout's."""
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))


def random_points(rng, n, h, w):
    """Random heads plus heads exactly on every border and corner of an (h, w) image."""
    border = np.array([[0, 0], [w, 0], [0, h], [w, h], [0, h / 2], [w, h / 3], [w / 2, 0], [w / 3, h]])
    return np.concatenate([rng.uniform((0, 0), (w, h), (n, 2)), border])


def brute_force_sigmas(points, beta=0.3, k=3, lone=4.0):
    n = len(points)
    if n == 1:
        return np.array([lone])
    out = []
    for i in range(n):
        dist = sorted(np.hypot(*(points[j] - points[i])) for j in range(n) if j != i)
        out.append(beta * np.mean(dist[:k]))
    return np.maximum(out, D.MIN_SIGMA)


@pytest.mark.parametrize("sigma_mode", ["fixed", "adaptive"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_density_sums_to_head_count(sigma_mode, seed):
    rng = np.random.default_rng(seed)
    h, w = 8 * rng.integers(4, 20, 2)
    points = random_points(rng, int(rng.integers(0, 60)), h, w)
    encoder = D.DensityEncoder(D.DensityParams(sigma_mode=sigma_mode, sigma=float(rng.uniform(1, 12))))
    target = encoder(points, (h, w), {})["density"]
    assert target.shape == (1, h // 8, w // 8)
    assert abs(target.double().sum().item() - len(points)) < 1e-4


def test_density_after_crop_and_scale_counts_kept_points():
    rng = np.random.default_rng(3)
    source = rng.uniform((0, 0), (384, 256), (120, 2))
    encoder = D.DensityEncoder(D.DensityParams())
    for scale, (top, left) in [(1.0, (40, 100)), (0.6, (0, 0)), (1.5, (101, 37))]:
        scaled = source * scale
        crop = scaled - (left, top)
        ids = np.nonzero((crop >= 0).all(1) & (crop < (128, 96)).all(1))[0]
        meta = {"scale": scale, "point_ids": ids, "source_points": source, "dataset": "crop-test"}
        target = encoder(crop[ids], (96, 128), meta)["density"]
        assert abs(target.double().sum().item() - len(ids)) < 1e-4
        # Sigmas follow the heads: the full image's adaptive widths, scaled with the image.
        np.testing.assert_allclose(encoder.sigmas(crop[ids], meta), brute_force_sigmas(source)[ids] * scale,
                                   rtol=1e-6)


def test_density_stays_inside_valid_region():
    encoder = D.DensityEncoder(D.DensityParams(sigma_mode="fixed", sigma=6.0))
    points = np.array([[49.0, 29.0], [0.0, 0.0], [50.0, 30.0]])
    target = encoder(points, (64, 64), {"valid_size": (30, 50)})["density"][0]
    assert abs(target.sum().item() - 3) < 1e-4
    assert target[4:].abs().sum() == 0 and target[:, 7:].abs().sum() == 0  # cells past row 30 / column 50


@pytest.mark.parametrize("valid", [None, (45, 70)])
def test_stride_8_map_is_the_block_sum_of_the_full_resolution_map(valid):
    rng = np.random.default_rng(4)
    h, w = 48, 72
    vh, vw = valid or (h, w)
    points = np.concatenate([rng.uniform((0, 0), (vw, vh), (30, 2)), [[0, 0], [vw, vh], [vw, 0]]])
    sigmas = rng.uniform(0.3, 9, len(points))
    fine = D.render_density(points, sigmas, (h, w), valid=valid)
    coarse = D.render_density(points, sigmas, (h, w), cell=8, valid=valid)
    np.testing.assert_allclose(coarse, fine.reshape(6, 8, 9, 8).sum(axis=(1, 3)), rtol=1e-9, atol=1e-12)
    assert abs(coarse.sum() - len(points)) < 1e-9 and abs(fine.sum() - len(points)) < 1e-9
    assert fine[vh:].sum() == 0 and fine[:, vw:].sum() == 0


def test_rendered_gaussian_matches_the_closed_form_away_from_borders():
    # A head far from the border: every pixel holds the 2-D normal's integral over its area (math.erf).
    x, y, sigma = 30.3, 17.8, 2.7

    def pixel_masses(centre, length):
        cdf = [0.5 * (1 + math.erf((edge - centre) / (sigma * math.sqrt(2)))) for edge in range(length + 1)]
        return np.diff(cdf)

    fine = D.render_density(np.array([[x, y]]), np.array([sigma]), (40, 64))
    np.testing.assert_allclose(fine, np.outer(pixel_masses(y, 40), pixel_masses(x, 64)), atol=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 50])
def test_adaptive_sigma_equals_brute_force(n):
    points = np.random.default_rng(n).uniform(0, 200, (n, 2))
    np.testing.assert_allclose(D.adaptive_sigmas(points), brute_force_sigmas(points), rtol=1e-9)


def test_sigma_cache_is_reused_and_rebuilt(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    source = rng.uniform(0, 128, (40, 2))
    meta = {"dataset": "cache-test", "index": 0, "source_points": source, "point_ids": np.arange(40), "scale": 1.0}
    first = D.DensityEncoder()(source, (128, 128), meta)["density"]
    assert len(list((tmp_path / "cache" / "density").glob("*.h5"))) == 1

    calls = []
    real = D.adaptive_sigmas
    monkeypatch.setattr(D, "adaptive_sigmas", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = D.DensityEncoder()(source, (128, 128), meta)["density"]  # a fresh encoder: read from the file
    assert torch.equal(first, again) and not calls

    moved = source + 3.0  # same dataset and index, edited annotation: recomputed, not the stale entry
    D.DensityEncoder()(moved, (128, 128), dict(meta, source_points=moved))
    assert len(calls) == 1
    np.testing.assert_allclose(D.DensityEncoder().sigmas(moved, dict(meta, source_points=moved)),
                               brute_force_sigmas(moved), rtol=1e-6)

    wider = D.DensityEncoder(D.DensityParams(beta=0.5))  # new parameters: a separate cache file
    sigmas = wider.sigmas(source, meta)
    assert len(calls) == 2 and len(list((tmp_path / "cache" / "density").glob("*.h5"))) == 2
    np.testing.assert_allclose(sigmas, brute_force_sigmas(source, beta=0.5), rtol=1e-6)


def test_sigma_cache_survives_a_corrupt_file():
    source = np.random.default_rng(6).uniform(0, 64, (10, 2))
    cache = D.SigmaCache("corrupt-test", D.DensityParams())
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(b"not hdf5")
    with pytest.warns(UserWarning, match="unreadable"):
        np.testing.assert_allclose(cache.sigmas(source), brute_force_sigmas(source), rtol=1e-6)
    assert D.SigmaCache("corrupt-test", D.DensityParams()).sigmas(source).shape == (10,)


def test_encoder_pickles_without_its_cache():
    import pickle

    encoder = CSRNet(batch_norm=False).target_encoder()
    source = np.random.default_rng(7).uniform(0, 64, (9, 2))
    meta = {"dataset": "pickle-test", "source_points": source, "point_ids": np.arange(9)}
    expected = encoder(source, (64, 64), meta)["density"]
    copy = pickle.loads(pickle.dumps(encoder))
    assert not copy._caches and torch.equal(copy(source, (64, 64), meta)["density"], expected)


@pytest.mark.parametrize("dilation", ["A", "C"])
def test_output_is_a_stride_8_map(dilation):
    torch.manual_seed(0)
    model = CSRNet(dilation=dilation, batch_norm=False).eval()
    with torch.no_grad():
        for h, w in [(64, 64), (96, 128), (136, 72)]:
            assert model(torch.randn(2, 3, h, w))["density"].shape == (2, 1, h // 8, w // 8)


def test_frontends_are_torchvision_vgg16_prefixes():
    from torchvision.models import vgg16, vgg16_bn

    for batch_norm, reference, end in [(False, vgg16, 23), (True, vgg16_bn, 33)]:
        ours = CSRNet(batch_norm=batch_norm).backbone.state_dict()
        with torch.device("meta"):  # shapes only: the 138M-parameter classifier is never allocated
            full = reference().state_dict()
        theirs = {k: v for k, v in full.items() if k.startswith("features.") and int(k.split(".")[1]) < end}
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_registry_builds_options_and_rejects_unknown_ones():
    model = create_model("csrnet", dilation="D", batch_norm=False, sigma_mode="fixed", sigma=3.0)
    assert model.backend[0].dilation == (4, 4) and model.density_params.sigma == 3.0
    assert get_entry("csrnet").family == "density"
    with pytest.raises(ZooError, match="unknown option"):
        create_model("csrnet", dilations="B")
    with pytest.raises(ZooError, match="dilation"):
        create_model("csrnet", dilation="E")


def test_loss_ignores_padding_and_decode_reads_counts_and_peaks():
    model = CSRNet(batch_norm=False, density_scale=10.0)
    target = torch.zeros(2, 1, 4, 6)
    target[0, 0, 1, 2] = 0.7
    target[0, 0, 2, 4] = 0.4
    target[1, 0, 0, 0] = 1.0
    sizes = torch.tensor([[32, 48], [16, 24]])
    batch = Batch(images=torch.zeros(2, 3, 32, 48), points=[], sizes=sizes, targets={"density": target})
    output = target * 10.0
    output[1, 0, 3, 5] = 50.0  # on padding of image 1: neither a loss term nor a count
    loss, parts = model.loss({"density": output}, batch)
    assert loss.item() == 0 and parts["mse"].item() == 0
    output[0, 0, 0, 0] = 1.0  # one valid cell off by 1.0, among 24 + 6 valid cells
    assert model.loss({"density": output}, batch)[0].item() == pytest.approx(1.0 / 30)

    first, second = model.decode({"density": output}, sizes, threshold=0.3)
    assert first.count == pytest.approx(0.7 + 0.4 + 0.1) and second.count == pytest.approx(1.0)
    np.testing.assert_allclose(first.points, [[20, 12], [36, 20]])  # cell centres of the two peaks
    np.testing.assert_allclose(second.points, [[4, 4]])
    assert second.dense_map.shape == (2, 3) and second.map_stride == 8 and second.map_is_density


def test_negative_density_counts_as_zero_so_the_count_and_the_map_agree():
    model = CSRNet(batch_norm=False, density_scale=2.0)
    output = torch.tensor([[0.6, -3.0, 1.0], [-0.4, 0.2, -5.0]]).view(1, 1, 2, 3)  # raw sum -6.6, scaled by 2
    (prediction,) = model.decode({"density": output}, torch.tensor([[16, 24]]), threshold=0.05)
    assert prediction.count == pytest.approx((0.6 + 1.0 + 0.2) / 2)  # the positive cells only, unscaled
    assert (prediction.dense_map >= 0).all()
    assert prediction.dense_map.sum() == pytest.approx(prediction.count)  # GAME regions sum to the count
    everything_negative = model.decode({"density": -output.abs()}, torch.tensor([[16, 24]]), threshold=0.05)
    assert everything_negative[0].count == 0 and len(everything_negative[0].points) == 0


def test_count_scale_multiplies_the_count_the_map_and_the_peak_threshold_sees():
    model = CSRNet(batch_norm=False)
    assert model.count_is_sum
    output = torch.tensor([[0.6, 0.0, 0.3], [0.0, 0.1, 0.0]]).view(1, 1, 2, 3)
    model.count_scale = 2.0
    (prediction,) = model.decode({"density": output}, torch.tensor([[16, 24]]), threshold=0.5)
    assert prediction.count == pytest.approx(2.0)  # 2 x (0.6 + 0.3 + 0.1)
    assert prediction.dense_map.sum() == pytest.approx(prediction.count)
    np.testing.assert_allclose(prediction.points, [[4, 4], [20, 4]])  # 0.3 x 2 clears 0.5; 0.1 x 2 does not



def test_learns_to_count_blobs(one_thread):
    torch.manual_seed(0)
    model = CSRNet(batch_norm=True)
    size, counts = (32, 32), (0, 6)
    train = blob_batches(blob_samples(48, size, counts, seed=1, encoder=model.target_encoder()), 8)
    held_out = blob_samples(32, size, counts, seed=2)
    true = np.array([len(s["points"]) for s in held_out], float)
    baseline = np.abs(true - np.mean([len(p) for b in train for p in b.points])).mean()
    optimizer = torch.optim.Adam(model.parameters(), 3e-4)
    losses = fit(model, train, optimizer, 60)
    model.eval()
    test = blob_batches(held_out, len(held_out))[0]
    predictions = model.predict(test.images, test.sizes, 0.1)
    mae = np.abs([p.count for p in predictions] - true).mean()
    assert min(losses) > 0 and np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])
    assert mae < 0.7 * baseline, (mae, baseline)
    # Peaks at stride-8 cell centres: measured 0.56; as many points at random cells score 0.44 on average.
    hits = sum(match_points(p.points, t.numpy(), 8) for p, t in zip(predictions, test.points, strict=True))
    f1_8 = 2 * hits / (sum(len(p.points) for p in predictions) + true.sum())
    assert f1_8 > 0.5, f1_8
