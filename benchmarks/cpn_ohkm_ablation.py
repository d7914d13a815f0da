"""CPN crowd mode on synthetic blobs: does online hard keypoint mining help, and which RefineNet sigma?

Part 1 (no training): at what distance do two heads stay two separate decoded peaks, for each target sigma,
when their Gaussians are merged by maximum (the training target) or summed (how a smooth regressor blurs
them together)?
Part 2: trains CPN with and without OHKM (same seeds, same data) for each `--sigmas` value and reports F1 at
4 and 8 px, MAE on held-out blobs, and recall of true points by nearest-neighbour distance.

    .venv/bin/python benchmarks/cpn_ohkm_ablation.py --backbone resnet18 --steps 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import blob_batches, blob_samples  # noqa: E402  (the blobs the tests learn on)

from zoo.metrics.counting import Evaluator  # noqa: E402
from zoo.models.families.cpn import CPN, PIXEL_CENTRE, find_peaks, render_heatmap  # noqa: E402

NN_BINS = (0, 6, 10, 14, np.inf)  # px: nearest-neighbour distance bins for the recall table


def separation_table(sigmas, distances=(6, 8, 10, 12, 16, 20), trials=200) -> None:
    """Share of random head pairs at each distance decoded as two peaks each within 4 px of a head."""
    rng = np.random.default_rng(0)
    print("part 1: two heads d px apart decoded as two peaks (share of", trials, "random placements)")
    print(f"{'merge':>5} {'sigma':>5} " + " ".join(f"{d:>5}px" for d in distances))
    for merge in ("max", "sum"):
        for sigma in sigmas:
            shares = []
            for d in distances:
                ok = 0
                for _ in range(trials):
                    centre, angle = rng.uniform(24, 40, 2), rng.uniform(0, np.pi)
                    offset = d / 2 * np.array([np.cos(angle), np.sin(angle)])
                    heads = np.stack([centre + offset, centre - offset])
                    cells = (heads - PIXEL_CENTRE) / 4
                    one = np.zeros(1, np.int64)
                    maps = [render_heatmap(cells[i:i + 1], one, 1, (16, 16), sigma) for i in range(2)]
                    heat = np.maximum(*maps) if merge == "max" else maps[0] + maps[1]
                    found = find_peaks(torch.from_numpy(heat)[None], torch.tensor([[64, 64]]), 0.2)[0][0]
                    ok += len(found) == 2 and recalled(found, heads, 4).all()
                shares.append(ok / trials)
            print(f"{merge:>5} {sigma:>5} " + " ".join(f"{s:>7.2f}" for s in shares))


def recalled(pred: np.ndarray, truth: np.ndarray, radius: float) -> np.ndarray:
    """Per true point, whether a one-to-one assignment pairs it with a prediction within `radius`."""
    hit = np.zeros(len(truth), bool)
    if len(pred) and len(truth):
        distance = np.linalg.norm(truth[:, None] - pred[None], axis=2)
        rows, cols = linear_sum_assignment(np.where(distance <= radius, distance, 1e6))
        hit[rows] = distance[rows, cols] <= radius
    return hit


def train_and_score(args, sigma: float, ohkm: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    model = CPN(backbone=args.backbone, sigma=sigma, ohkm=ohkm)
    encoder = model.target_encoder()
    size = (args.size, args.size)
    train = blob_batches(blob_samples(args.train, size, (0, args.max_count), seed=100 + seed, encoder=encoder),
                         args.batch)
    test = blob_batches(blob_samples(args.test, size, (0, args.max_count), seed=999, encoder=encoder), args.batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    start = time.time()
    model.train()
    for step in range(args.steps):
        batch = train[step % len(train)]
        loss, _ = model.loss(model(batch.images), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        heatmaps = [(model(batch.images), batch) for batch in test]
    scores = {t: score(model, heatmaps, t, size) for t in args.thresholds}
    best = max(scores, key=lambda t: scores[t]["f1_4"])
    return {**scores[args.thresholds[0]], "best_threshold": best, "best_f1_4": scores[best]["f1_4"],
            "seconds": time.time() - start}


def score(model: CPN, outputs, threshold: float, size) -> dict:
    evaluator, hits, nn_distance = Evaluator(), [], []
    for output, batch in outputs:
        for prediction, truth in zip(model.decode(output, batch.sizes, threshold), batch.points, strict=True):
            truth = truth.numpy()
            evaluator.add(prediction, truth, size)
            hits.append(recalled(prediction.points, truth, 4))
            nearest = cKDTree(truth).query(truth, k=2)[0][:, 1] if len(truth) > 1 else np.full(len(truth), np.inf)
            nn_distance.append(nearest)
    hits, bins = np.concatenate(hits), np.digitize(np.concatenate(nn_distance), NN_BINS[1:-1])
    summary = evaluator.summary()
    recall = [hits[bins == b].mean() if (bins == b).any() else np.nan for b in range(len(NN_BINS) - 1)]
    return {"f1_4": summary["f1_4"], "f1_8": summary["f1_8"], "mae": summary["mae"], "recall_by_nn": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.75], help="RefineNet sigmas (output cells)")
    parser.add_argument("--ohkm", choices=["both", "on", "off"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train", type=int, default=128, help="training images")
    parser.add_argument("--test", type=int, default=64, help="held-out images")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-count", type=int, default=12)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.2, 0.4, 0.5],
                        help="decode thresholds; the first is reported, the best F1@4 over all is noted")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-separation", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_separation:
        separation_table([0.5, 0.75, 1.0, 1.5, 2.0])
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.ohkm]
    bins = " ".join(f"<{hi:g}px" if np.isfinite(hi) else f">={lo:g}px"
                    for lo, hi in zip(NN_BINS, NN_BINS[1:], strict=False))
    print(f"part 2: {args.backbone}, {args.steps} steps of {args.batch}, {args.size}px blobs with 0..{args.max_count}"
          f" heads, threshold {args.thresholds[0]}; recall@4px by nearest-neighbour distance: {bins}")
    for sigma in args.sigmas:
        for ohkm in modes:
            runs = [train_and_score(args, sigma, ohkm, seed) for seed in args.seeds]
            for seed, run in zip(args.seeds, runs, strict=True):
                print(f"sigma {sigma} ohkm {ohkm!s:5} seed {seed}: F1@4 {run['f1_4']:.3f} F1@8 {run['f1_8']:.3f} "
                      f"MAE {run['mae']:.2f} recall " + " ".join(f"{r:.2f}" for r in run["recall_by_nn"]) +
                      f" best F1@4 {run['best_f1_4']:.3f} at {run['best_threshold']} ({run['seconds']:.0f} s)",
                      flush=True)
            mean = {k: np.mean([r[k] for r in runs]) for k in ("f1_4", "f1_8", "mae")}
            print(f"sigma {sigma} ohkm {ohkm!s:5} mean: F1@4 {mean['f1_4']:.3f} F1@8 {mean['f1_8']:.3f} "
                  f"MAE {mean['mae']:.2f}", flush=True)


if __name__ == "__main__":
    main()
