"""`zoo eval`: score a checkpoint on a dataset split with the shared evaluator."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from zoo.cli.options import (
    add_amp,
    add_checkpoint_model,
    add_device,
    add_runtime,
    add_threshold,
    add_trust_pickle,
    add_weights,
    on_runtime,
)
from zoo.cli.output import console, err_console, print_notes, warn
from zoo.inference.views import VIEW_COUNTS
from zoo.metrics.names import label


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="score a checkpoint on a dataset split with the shared evaluator")
    add_checkpoint_model(p)
    add_weights(p)
    p.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--format", help="dataset format (default: auto, or the recorded one with the recorded data)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    add_threshold(p)
    p.add_argument("--per-image", metavar="CSV", help="also write one row per image to this CSV")
    p.add_argument("--views", type=int, default=1, choices=VIEW_COUNTS,
                   help="count each image as the mean over this many views: 2 adds the left-right flip, 4 the "
                        "up-down flip and half turn, 8 the quarter turns (for images with no up); points, maps, "
                        "GAME and F1 stay those of the image as given (default 1)")
    add_device(p, default="cpu")
    add_amp(p)
    add_trust_pickle(p)
    p.add_argument("--json", action="store_true", help="last stdout line: the metrics as one JSON object")
    add_runtime(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import math

    from zoo.inference.predict import evaluate_checkpoint, load_inference, synthetic_only_note

    inference = load_inference(args.weights, args.model, device=args.device, threshold=args.threshold,
                               amp=args.amp, trust_pickle=args.trust_pickle)
    print_notes(inference.checkpoint)
    warn(synthetic_only_note(inference.checkpoint, [args.data] if args.data else []))
    inference = on_runtime(inference, args)
    evaluator = evaluate_checkpoint(inference, args.data, args.format, args.split, args.views)
    if args.per_image:
        evaluator.write_csv(args.per_image)
    summary = evaluator.summary()
    views = f", counts: mean of {args.views} views" if args.views > 1 else ""
    table = Table(title=f"zoo eval {inference.model.registry_name}: {args.split} split, {summary['images']} "
                        f"images, threshold {inference.threshold:g}{views}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "images":
            table.add_row(label(key), f"{value:.4f}")
    (err_console if args.json else console).print(table)
    if args.json:  # NaN (NAE without any person in the split) becomes null: the line stays strict JSON
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}))
    return 0
