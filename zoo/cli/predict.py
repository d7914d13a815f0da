"""`zoo predict`: count and locate people in images, folders and videos; write points, overlays and a summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

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
from zoo.core.errors import ZooError

# Images above this many pixels run tile by tile: whole-image inference's memory grows with the image, a tile's does
# not (results/tiling.csv and docs/results.md measure both)
MAX_PIXELS = 2048 * 2048


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", intermixed=True,
                              help="count and locate people in images; write points, overlays, summary")
    add_checkpoint_model(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_FOLDER_OR_VIDEO",
                   help="image files, folders of images, and/or video files (.mp4, .avi, .mov, .mkv, .webm, ...)")
    add_weights(p)
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    add_threshold(p)
    p.add_argument("--batch-size", type=int, default=4, help="consecutive same-size images per forward pass")
    add_device(p, default="cpu")
    add_amp(p)
    add_trust_pickle(p)
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: count every Nth frame (default 1)")
    p.add_argument("--video-out", action="store_true",
                   help="videos: also write OUT/<stem>_overlay.avi, the counted frames with their overlays")
    p.add_argument("--tile", type=int, metavar="SIZE",
                   help="run every image larger than SIZE x SIZE tile by tile (a multiple of the model's stride)")
    p.add_argument("--overlap", type=int, metavar="PX",
                   help="context around each tile's core (default and least: the model's receptive context)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"without --tile, tile images of more than N pixels, with the largest tiles within N "
                        f"(default {MAX_PIXELS} = 2048 x 2048: ~4 GiB peak for p2pnet and csrnet on CPU; 0: never)")
    add_runtime(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from zoo.inference.predict import load_inference, predict_to_folder, synthetic_only_note
    from zoo.inference.tiling import resolve_tiling
    from zoo.inference.video import is_video, predict_video
    from zoo.models.registry import list_models

    # MODEL may be omitted and argparse fills it first: the first word is the model only when it names one.
    inputs = [args.model, *args.inputs] if args.model else list(args.inputs)
    model = inputs.pop(0) if inputs[0] in list_models() and not Path(inputs[0]).exists() else None
    if not inputs:
        raise ZooError(f"name the images, folders or videos to run {model} on")
    inference = load_inference(args.weights, model, device=args.device, threshold=args.threshold, amp=args.amp,
                               trust_pickle=args.trust_pickle)
    print_notes(inference.checkpoint)
    warn(synthetic_only_note(inference.checkpoint, inputs))
    tiling = resolve_tiling(inference.model, args.tile, args.overlap, args.max_pixels)
    inference = on_runtime(inference, args)

    videos = [item for item in inputs if is_video(item)]
    for video in videos:
        table = predict_video(inference, video, args.out, args.every, args.batch_size, args.video_out)
        console.print(f"{escape(video)}: {len(table)} frame(s) counted (every {args.every}), count "
                      f"{table['count'].min():.1f} to {table['count'].max():.1f}, mean {table['count'].mean():.1f}; "
                      f"written to {escape(str(Path(args.out) / (Path(video).stem + '_counts.csv')))}",
                      highlight=False, soft_wrap=True)
    inputs = [item for item in inputs if not is_video(item)]
    if not inputs:
        return 0

    def report(outcome) -> None:
        if outcome.error:
            err_console.print(f"[red]skipped:[/] {escape(outcome.error)}", highlight=False, soft_wrap=True)
        else:
            found = outcome.prediction
            console.print(f"{escape(str(outcome.path))}: count {found.count:.1f}, {len(found.points)} points",
                          highlight=False, soft_wrap=True)

    outcomes = predict_to_folder(inference, inputs, args.out, args.batch_size, on_outcome=report, tiling=tiling)
    failed = sum(o.error is not None for o in outcomes)
    console.print(f"{len(outcomes) - failed} image(s) predicted into {escape(args.out)}"
                  + (f", {failed} unreadable skipped" if failed else ""), highlight=False)
    return 1 if failed else 0
