"""`zoo predict`: count and locate people in images, folders, glob patterns, lists of paths, video files, cameras and
streams; write points, overlays, rows per frame and a summary (sources: zoo.inference.sources; zones:
zoo.inference.zones, docs/zones.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.markup import escape

from zoo.cli.options import (
    add_amp,
    add_checkpoint_model,
    add_compile,
    add_device,
    add_runtime,
    add_threshold,
    add_trust_pickle,
    add_weights,
    compiles,
    on_runtime,
)
from zoo.cli.output import console, err_console, print_notes, warn
from zoo.core.errors import ZooError

# Images above this many pixels run tile by tile: whole-image inference's memory grows with the image, a tile's does
# not (results/tiling.csv and docs/results.md measure both)
MAX_PIXELS = 2048 * 2048
ROW_FORMATS = ("csv", "jsonl")  # --rows
SHOW_CHOICES = ("points", "density")  # --show: zoo.inference.predict.render_overlay's `show`


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", intermixed=True,
                              help="count and locate people in images; write points, overlays, summary")
    add_checkpoint_model(p)
    p.add_argument("inputs", nargs="+", metavar="SOURCE",
                   help="image files, folders of images, glob patterns ('shots/*.jpg'), .txt lists of image paths, "
                        "video files (.mp4, .avi, .mov, .mkv, .webm, ...), camera indices (0, 1, ...) and stream "
                        "URLs (rtsp://, http://, https://)")
    add_weights(p)
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    add_threshold(p)
    p.add_argument("--batch-size", type=int, default=4, help="consecutive same-size images per forward pass")
    add_device(p, default="cpu")
    add_amp(p)
    add_trust_pickle(p)
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="videos, cameras, streams: count every Nth frame (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="videos, cameras, streams: stop after N counted frames")
    p.add_argument("--max-seconds", type=float, metavar="S",
                   help="videos, cameras, streams: stop after S seconds (a video's own clock; a camera's or "
                        "stream's since it opened)")
    p.add_argument("--rows", choices=ROW_FORMATS, default="csv",
                   help="where the rows go as they are counted: csv (OUT/<stem>_counts.csv per video, camera or "
                        "stream; OUT/summary.csv for images) or jsonl (one JSON object a line on stdout, messages "
                        "on stderr)")
    p.add_argument("--zones", metavar="FILE",
                   help="JSON file of named polygons in pixels (docs/zones.md): a count per zone in every row, "
                        "zones drawn on the overlays")
    p.add_argument("--show", choices=SHOW_CHOICES,
                   help="what overlays draw: points, or the density map / heatmap as a translucent layer "
                        "(default: the map where the model gives one, and points unless they come from a density)")
    p.add_argument("--video-out", action="store_true",
                   help="videos, cameras, streams: also write OUT/<stem>_overlay.avi, the counted frames with their "
                        "overlays")
    p.add_argument("--tile", type=int, metavar="SIZE",
                   help="run every image larger than SIZE x SIZE tile by tile (a multiple of the model's stride)")
    p.add_argument("--overlap", type=int, metavar="PX",
                   help="context around each tile's core (default and least: the model's receptive context)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"without --tile, tile images of more than N pixels, with the largest tiles within N "
                        f"(default {MAX_PIXELS} = 2048 x 2048: ~4 GiB peak for p2pnet and csrnet on CPU; 0: never)")
    add_runtime(p)
    add_compile(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from zoo.inference.predict import load_inference, predict_to_folder, synthetic_only_note
    from zoo.inference.sources import resolve_source
    from zoo.inference.tiling import resolve_tiling
    from zoo.inference.video import predict_video
    from zoo.inference.zones import ZoneCounter, load_zones
    from zoo.models.registry import list_models

    # MODEL may be omitted and argparse fills it first: the first word is the model only when it names one.
    inputs = [args.model, *args.inputs] if args.model else list(args.inputs)
    model = inputs.pop(0) if inputs[0] in list_models() and not Path(inputs[0]).exists() else None
    if not inputs:
        raise ZooError(f"name the images, folders, videos, cameras or streams to run {model} on")
    zones = ZoneCounter(load_zones(args.zones)) if args.zones else None  # a bad zone file fails before any work
    sources = [resolve_source(item) for item in inputs]
    compile_model = compiles(args, any(s.kind != "images" for s in sources))  # a refused --compile fails first
    inference = load_inference(args.weights, model, device=args.device, threshold=args.threshold, amp=args.amp,
                               trust_pickle=args.trust_pickle)
    print_notes(inference.checkpoint)
    warn(synthetic_only_note(inference.checkpoint, [s.label for s in sources if s.kind in ("images", "video")]))
    tiling = resolve_tiling(inference.model, args.tile, args.overlap, args.max_pixels)
    inference = on_runtime(inference, args)
    jsonl = args.rows == "jsonl"
    say = err_console if jsonl else console  # with JSON lines stdout holds the rows alone
    if compile_model:
        from zoo.deploy.compiled import with_compiled

        inference = with_compiled(inference, lambda line: say.print(escape(line), highlight=False, soft_wrap=True),
                                  warn)

    status = 0
    for source in (s for s in sources if s.kind != "images"):
        result = predict_video(inference, source, args.out, args.every, args.batch_size, args.video_out,
                               max_frames=args.max_frames, max_seconds=args.max_seconds,
                               stream=sys.stdout if jsonl else None, zones=zones, show=args.show)
        table, kept = result.table, f"{len(result.table)} row(s) kept in {result.target}"
        if result.interrupted:
            err_console.print(f"[red]interrupted:[/] {escape(source.label)}: {escape(kept)}", highlight=False,
                              soft_wrap=True)
            return 130
        if result.stopped:
            err_console.print(f"[red]stopped:[/] {escape(source.label)} {escape(result.stopped)}; {escape(kept)}",
                              highlight=False, soft_wrap=True)
            status = 1
        say.print(f"{escape(source.label)}: {len(table)} frame(s) counted (every {args.every}), count "
                  f"{table['count'].min():.1f} to {table['count'].max():.1f}, mean {table['count'].mean():.1f}; "
                  f"rows written to {escape(result.target)}", highlight=False, soft_wrap=True)
    images = [path for s in sources if s.kind == "images" for path in s.paths]
    if not images:
        return status

    def report(outcome) -> None:
        if outcome.error:
            err_console.print(f"[red]skipped:[/] {escape(outcome.error)}", highlight=False, soft_wrap=True)
            return
        found = outcome.prediction
        if jsonl:
            record = {"source": str(outcome.path), "count": found.count, "n_points": len(found.points)}
            if outcome.zones is not None:
                record["zones"] = outcome.zones
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        else:
            console.print(f"{escape(str(outcome.path))}: count {found.count:.1f}, {len(found.points)} points",
                          highlight=False, soft_wrap=True)

    outcomes = predict_to_folder(inference, images, args.out, args.batch_size, on_outcome=report, tiling=tiling,
                                 zones=zones, show=args.show)
    failed = sum(o.error is not None for o in outcomes)
    say.print(f"{len(outcomes) - failed} image(s) predicted into {escape(args.out)}"
              + (f", {failed} unreadable skipped" if failed else ""), highlight=False)
    return 1 if failed else status
