"""The `zoo` command. Each subcommand parses its flags here and calls one function of the package.

User errors (`ZooError`) print one line on stderr and exit with status 2, without a traceback. Messages are
escaped before printing: file names may contain brackets that rich would otherwise read as markup.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zoo.core.device import default_device
from zoo.core.errors import ZooError
from zoo.core.precision import AMP_CHOICES, AMP_MODES
from zoo.deploy.export import DEFAULT_OPSET, RUNTIMES
from zoo.deploy.quantize import CALIBRATION_IMAGES
from zoo.inference.views import VIEW_COUNTS

console = Console()
WEIGHTS_HELP = "zoo checkpoint, or a published checkpoint of the model's family (then name the model)"
THRESHOLD_HELP = "decision threshold (default: the one the run chose on validation, else its recipe's)"
# zoo predict tiles larger images: p2pnet and csrnet_bn then peak at ~4 GiB on CPU whatever the image's size, where
# whole-image inference needs ~0.85 GiB + 0.73 GiB per megapixel (results/tiling.csv, results/README.md)
MAX_PIXELS = 2048 * 2048
err_console = Console(stderr=True)


def cmd_list(args) -> int:
    from zoo.models.registry import get_entry, list_models

    entries = [get_entry(name) for name in list_models()]
    if args.json:
        print(json.dumps([{"name": e.name, "family": e.family, "description": e.description} for e in entries]))
        return 0
    table = Table(title="crowd-zoo models")
    for col in ("name", "family", "epochs", "batch x crops", "crop", "lr", "description"):
        table.add_column(col)
    for e in entries:
        r = e.recipe
        table.add_row(e.name, e.family, str(r.epochs), f"{r.batch_size} x {r.crops_per_image}", str(r.crop_size),
                      f"{r.lr:g}", e.description)
    console.print(table)
    return 0


def cmd_data_synth(args) -> int:
    from zoo.core.paths import data_dir
    from zoo.data.synthetic import generate

    root = generate(Path(args.out) if args.out else data_dir() / "synthetic", seed=args.seed)
    console.print(f"synthetic crowds written to [bold]{root}[/]")
    return 0


def cmd_data_check(args) -> int:
    from zoo.data.check import check_dataset

    report = check_dataset(Path(args.path), args.format)
    table = Table(title=f"zoo data check {escape(args.path)}", show_header=False)
    for key in ("images", "readable_images", "heads", "heads_outside_dropped", "min", "mean", "max"):
        value = report[key]
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    for name, split in report["splits"].items():
        table.add_row(f"{name} split", f"{split['images']} images, {split['heads']} heads")
    table.add_row("problems", str(len(report["problems"])))
    table.add_row("warnings", str(len(report["warnings"])))
    (err_console if args.json else console).print(table)
    for line in report["problems"]:
        err_console.print(f"[red]problem[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in report["warnings"]:
        err_console.print(f"[yellow]warning[/] {escape(line)}", highlight=False, soft_wrap=True)
    if args.json:
        print(json.dumps(report))
    return 1 if report["problems"] else 0


def _parse_assignments(pairs: list[str], flag: str) -> dict:
    """`key=value` pairs; values are Python literals where they parse as one (numbers, tuples), else strings."""
    import ast

    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ZooError(f"{flag} expects key=value, got {pair!r}")
        try:
            result[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            result[key] = value
    return result


def cmd_train(args) -> int:
    import tomllib

    from zoo.training.trainer import TrainConfig, train

    settings = {}
    if args.config:
        try:
            settings = tomllib.loads(Path(args.config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ZooError(f"{args.config}: cannot read config ({exc})") from None
    recipe = dict(settings.pop("recipe", {}))
    model_kwargs = dict(settings.pop("model_kwargs", {}))
    recipe.update(_parse_assignments(args.set, "--set"))
    model_kwargs.update(_parse_assignments(args.model_arg, "--model-arg"))
    for flag in ("epochs", "batch_size", "lr", "backbone_lr", "crop_size"):
        if getattr(args, flag) is not None:
            recipe[flag] = getattr(args, flag)
    flags = {k: getattr(args, k) for k in ("data", "format", "out", "device", "amp", "seed", "workers", "init_from",
                                           "val_fraction")
             if getattr(args, k) is not None}
    if args.resume:
        flags["resume"] = True
    if args.overwrite:
        flags["overwrite"] = True
    if args.channels_last:
        flags["channels_last"] = True
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ZooError(f"{args.config}: unknown setting(s) {', '.join(sorted(unknown))}")
    model = args.model or settings.pop("model", None)
    settings.pop("model", None)
    if not model:
        raise ZooError("name the model to train (zoo train MODEL) or set model in --config")
    cfg = TrainConfig(model=model, **{**{"device": default_device()}, **settings, **flags},
                      recipe=recipe, model_kwargs=model_kwargs)
    result = train(cfg, console=err_console if args.json else console)
    if args.json and result.get("checkpoint"):
        print(json.dumps(result))
    return 0


def cmd_bench(args) -> int:
    from zoo.bench import BenchConfig, run_bench
    from zoo.bench.config import parse_list, parse_resolution, parse_weights
    from zoo.core.precision import slow_amp_note
    from zoo.models.registry import list_models

    cfg = BenchConfig(
        models=list(parse_list(args.models, "--models")) if args.models else list_models(),
        resolution=parse_resolution(args.resolution), batch_sizes=parse_list(args.batch_sizes, "--batch-sizes", int),
        dtypes=parse_list(args.dtype, "--dtype"), channels_last=args.channels_last, compile=args.compile,
        runtimes=parse_list(args.runtime, "--runtime"), calibration=args.calibration,
        fp32_reference=args.fp32_reference,
        device=args.device or default_device(), iters=args.iters,
        warmup=args.warmup, train_iters=args.train_iters, train_step=args.train_step,
        weights=parse_weights(args.weights), data=args.data, out=Path(args.out) if args.out else None,
        isolate=False if args.in_process else None)
    if "bf16" in cfg.dtypes:
        _warn(slow_amp_note(cfg.device, "bf16", remedy="compare --dtype fp32"))
    rows = run_bench(cfg, console=err_console if args.json else console)
    if args.json:
        print(json.dumps(rows))
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _metric_label(key: str) -> str:
    if key.startswith("game"):
        return f"GAME({key[4:]})"
    name, _, pixels = key.partition("_")
    if pixels:
        return f"{'F1' if name == 'f1' else name} @ {pixels} px"
    return {"mse": "MSE (root mean squared error)"}.get(key, key.upper())


def _print_notes(state: dict) -> None:
    """What loading a checkpoint had to decide (e.g. options its weights imply), and where converted weights came
    from."""
    for line in state.get("notes", []):
        err_console.print(f"[yellow]note[/] {escape(line)}", highlight=False, soft_wrap=True)
    origin = state.get("provenance", {})
    if "source" in origin:  # converted from a published file (a training run records its commit instead)
        err_console.print(f"[yellow]note[/] weights converted from {escape(origin['source'])} "
                          f"({escape(origin['layout'])})", highlight=False, soft_wrap=True)


def cmd_convert(args) -> int:
    from zoo.models.weights.checkpoint import model_from_checkpoint, save_checkpoint

    model, state = model_from_checkpoint(args.source, args.model, trust_pickle=args.trust_pickle)
    _print_notes(state)
    origin = state.get("provenance", {})
    if "source" not in origin:  # a zoo checkpoint: its training record is kept beside the file it came from
        origin = {**origin, "source": Path(args.source).name, "layout": "zoo"}
    checkpoint = {"model": model.state_dict(), "model_name": args.model, "model_kwargs": model.registry_kwargs,
                  "provenance": origin}
    save_checkpoint(Path(args.out), checkpoint)
    console.print(f"{escape(args.source)} -> {escape(args.out)}: {args.model}, "
                  f"{escape(checkpoint['provenance']['layout'])}", highlight=False, soft_wrap=True)
    return 0


def cmd_export(args) -> int:
    from zoo.deploy.export import checkpoint_metadata, export_onnx
    from zoo.inference.predict import load_inference

    run = load_inference(args.weights, args.model, trust_pickle=args.trust_pickle)
    _print_notes(run.state)
    if args.calibration and not args.int8:
        raise ZooError("--calibration is for --int8 (its activation ranges are measured on those images)")
    metadata = checkpoint_metadata(args.weights)
    if not args.int8:
        export_onnx(run.model, Path(args.out), threshold=run.threshold, opset=args.opset, metadata=metadata)
    else:
        from zoo.deploy.quantize import export_int8

        data = args.calibration or run.state.get("config", {}).get("train", {}).get("data", "synthetic")
        export_int8(run.model, Path(args.out), data, threshold=run.threshold, images=args.calibration_images,
                    opset=args.opset, metadata=metadata)
    precision = "int8 (QDQ)" if args.int8 else "float32"
    console.print(f"{escape(args.weights)} -> {escape(args.out)}: {run.model.registry_name}, ONNX opset {args.opset}, "
                  f"{precision}, input (batch, 3, height, width) with height and width multiples of "
                  f"{run.model.stride}", highlight=False, soft_wrap=True)
    return 0


def _on_runtime(run, args):
    """`run` with its forward pass on the runtime the flags choose (--onnx FILE implies onnxruntime)."""
    runtime = args.runtime or ("onnxruntime" if args.onnx else "torch")
    if runtime == "torch":
        if args.onnx:
            raise ZooError("--onnx FILE runs on onnxruntime, not --runtime torch")
        from zoo.core.precision import slow_amp_note

        _warn(slow_amp_note(run.device, run.amp))
        return run
    if args.amp not in (None, "off"):
        _warn(f"--amp {args.amp} does not apply to --runtime onnxruntime: the exported model runs in float32")
    from zoo.deploy.runtime import with_onnxruntime

    return with_onnxruntime(run, args.weights, args.onnx)


def cmd_eval(args) -> int:
    import math

    from zoo.inference.predict import evaluate_checkpoint, load_inference, synthetic_only_note

    run = load_inference(args.weights, args.model, device=args.device, threshold=args.threshold, amp=args.amp,
                         trust_pickle=args.trust_pickle)
    _print_notes(run.state)
    _warn(synthetic_only_note(run.state, [args.data] if args.data else []))
    run = _on_runtime(run, args)
    evaluator = evaluate_checkpoint(run, args.data, args.format, args.split, args.views)
    if args.per_image:
        evaluator.write_csv(args.per_image)
    summary = evaluator.summary()
    views = f", counts: mean of {args.views} views" if args.views > 1 else ""
    table = Table(title=f"zoo eval {run.model.registry_name}: {args.split} split, {summary['images']} images, "
                        f"threshold {run.threshold:g}{views}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "images":
            table.add_row(_metric_label(key), f"{value:.4f}")
    (err_console if args.json else console).print(table)
    if args.json:  # NaN (NAE without any person in the split) becomes null: the line stays strict JSON
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}))
    return 0


def _warn(note: str | None) -> None:
    if note:
        err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)


class _IntermixedParser(argparse.ArgumentParser):
    """Takes positionals on both sides of the options (`zoo predict MODEL --weights W IMAGE...`): plain argparse
    fills every positional from the words before the first option and rejects the ones after it."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # the stdlib's intermixed parsing calls back here for its two plain passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def cmd_predict(args) -> int:
    from zoo.inference.predict import load_inference, predict_to_folder, synthetic_only_note
    from zoo.inference.tiling import resolve_tiling
    from zoo.inference.video import is_video, predict_video
    from zoo.models.registry import list_models

    # MODEL may be omitted and argparse fills it first: the first word is the model only when it names one.
    inputs = [args.model, *args.inputs] if args.model else list(args.inputs)
    model = inputs.pop(0) if inputs[0] in list_models() and not Path(inputs[0]).exists() else None
    if not inputs:
        raise ZooError(f"name the images, folders or videos to run {model} on")
    run = load_inference(args.weights, model, device=args.device, threshold=args.threshold, amp=args.amp,
                         trust_pickle=args.trust_pickle)
    _print_notes(run.state)
    _warn(synthetic_only_note(run.state, inputs))
    tiling = resolve_tiling(run.model, args.tile, args.overlap, args.max_pixels)
    run = _on_runtime(run, args)

    videos = [item for item in inputs if is_video(item)]
    for video in videos:
        table = predict_video(run, video, args.out, args.every, args.batch_size, args.video_out)
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

    outcomes = predict_to_folder(run, inputs, args.out, args.batch_size, on_outcome=report, tiling=tiling)
    failed = sum(o.error is not None for o in outcomes)
    console.print(f"{len(outcomes) - failed} image(s) predicted into {escape(args.out)}"
                  + (f", {failed} unreadable skipped" if failed else ""), highlight=False)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered models and their recipes")
    p.add_argument("--json", action="store_true", help="print the models as one JSON list")
    p.set_defaults(func=cmd_list)

    data = sub.add_parser("data", help="datasets: generate the synthetic default, check a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("synth", help="generate the synthetic crowd dataset (ShanghaiTech layout)")
    p.add_argument("--out", default=None, help="output folder (default: data/synthetic)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_synth)
    p = data_sub.add_parser("check", help="read every sample and report counts and problems")
    p.add_argument("path")
    p.add_argument("--format", default="auto", help="auto, shanghaitech, p2pnet, cells, json or coco")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=cmd_data_check)

    p = sub.add_parser("train", help="train a model with its registry recipe (torchrun-aware)")
    p.add_argument("model", nargs="?", help="registered model name (see zoo list)")
    p.add_argument("--data", help="synthetic (default), cells, or a dataset path")
    p.add_argument("--format", help="dataset format: auto (default), shanghaitech, p2pnet, cells, json, coco")
    p.add_argument("--val-fraction", type=float,
                   help="share of train held out to validate when the data has no val split (default 0.2)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="images per step over all ranks")
    p.add_argument("--lr", type=float)
    p.add_argument("--backbone-lr", type=float)
    p.add_argument("--crop-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", choices=AMP_CHOICES,
                   help="mixed precision (default auto: bf16, or off on a CPU without bf16 instructions)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--out", help="run folder (default: runs/MODEL, or the next free runs/MODEL-N); one holding a "
                                 "run is refused without --resume or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt (without --out: the latest runs/MODEL-N)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in OUT (without --out: runs/MODEL); its files are deleted first")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from the weights of this zoo or published checkpoint (fine-tuning)")
    p.add_argument("--config", help="TOML file: top-level TrainConfig keys, [recipe] and [model_kwargs] tables")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any recipe field")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor override")
    p.add_argument("--json", action="store_true", help="last stdout line: final test metrics as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="speed, FLOPs, memory (and accuracy with --weights); appends to a CSV")
    p.add_argument("--models", help="comma-separated registered names (default: all)")
    p.add_argument("--resolution", default="768x1024", help="HEIGHTxWIDTH of the timed input")
    p.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,8")
    p.add_argument("--dtype", default="bf16",
                   help="fp32, bf16 or fp16 (CUDA) via autocast, int8 (onnxruntime, quantized); a list compares them")
    p.add_argument("--fp32-reference", action="store_true",
                   help="also run plain fp32 first: the reference of the speedup and count-difference columns")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up includes compiling)")
    p.add_argument("--runtime", default="torch",
                   help=f"{' or '.join(RUNTIMES)} (CPU, fp32 or int8: the model exported to ONNX); a list compares "
                        "them")
    p.add_argument("--calibration", default="synthetic", metavar="DATA",
                   help="--dtype int8: dataset whose training images calibrate the quantization (default synthetic)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--iters", type=int, default=3, help="timed forward passes per batch size")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (the first one counts FLOPs)")
    p.add_argument("--train-iters", type=int, default=1, help="timed training steps (after --warmup steps)")
    p.add_argument("--train-step", action=argparse.BooleanOptionalAction, default=True,
                   help="measure training-step throughput at the recipe's crop and batch")
    p.add_argument("--weights", help="MODEL=CHECKPOINT,...: load weights and measure accuracy")
    p.add_argument("--data", default="synthetic", help="dataset whose test split scores --weights")
    p.add_argument("--out", default="results/bench.csv", help="CSV the rows are appended to ('' for none)")
    p.add_argument("--in-process", action="store_true",
                   help="run every model in this process on CPU too (no peak-RSS figure)")
    p.add_argument("--json", action="store_true", help="last stdout line: the rows as one JSON list")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="score a checkpoint on a dataset split with the shared evaluator")
    p.add_argument("model", nargs="?", help="registered model name (default: the one the checkpoint records)")
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--format", help="dataset format (default: auto, or the recorded one with the recorded data)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--threshold", type=float, help=THRESHOLD_HELP)
    p.add_argument("--per-image", metavar="CSV", help="also write one row per image to this CSV")
    p.add_argument("--views", type=int, default=1, choices=VIEW_COUNTS,
                   help="count each image as the mean over this many views: 2 adds the left-right flip, 4 the "
                        "up-down flip and half turn, 8 the quarter turns (for images with no up); points, maps, "
                        "GAME and F1 stay those of the image as given (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: as trained)")
    _add_trust_pickle(p)
    p.add_argument("--json", action="store_true", help="last stdout line: the metrics as one JSON object")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="count and locate people in images; write points, overlays, summary")
    p.__class__ = _IntermixedParser
    p.add_argument("model", nargs="?", help="registered model name (default: the one the checkpoint records)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_FOLDER_OR_VIDEO",
                   help="image files, folders of images, and/or video files (.mp4, .avi, .mov, .mkv, .webm, ...)")
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--threshold", type=float, help=THRESHOLD_HELP)
    p.add_argument("--batch-size", type=int, default=4, help="consecutive same-size images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: as trained)")
    _add_trust_pickle(p)
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
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert", help="turn a published checkpoint (P2PNet, CSRNet-pytorch, lwcc, C-3-Framework) "
                                       "into a zoo checkpoint")
    p.add_argument("source", help="the published .pth / .pth.tar file")
    p.add_argument("--model", required=True, help="registered model name it is for (see zoo list)")
    p.add_argument("--out", required=True, help="zoo checkpoint to write (.pt)")
    _add_trust_pickle(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="write a checkpoint's network as an ONNX file (dynamic batch, height, width)")
    p.add_argument("model", nargs="?", help="registered model name (default: the one the checkpoint records)")
    p.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="file format (onnx, the default)")
    p.add_argument("--out", required=True, help="file to write (.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--int8", action="store_true",
                   help="int8 static quantization for onnxruntime (weights per channel, activations calibrated)")
    p.add_argument("--calibration", metavar="DATA",
                   help="--int8: dataset whose training images calibrate it (default: the one it was trained on)")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help=f"--int8: calibration images (default {CALIBRATION_IMAGES})")
    _add_trust_pickle(p)
    p.set_defaults(func=cmd_export)
    return parser


def _add_trust_pickle(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow weights files that hold pickled Python objects (they can run code while loading); "
                        "by default only tensors and plain values are read")


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="what runs the network: torch (default) or onnxruntime (CPU, float32; the model is exported "
                        "for the run unless --onnx names a file)")
    p.add_argument("--onnx", metavar="FILE", help="a `zoo export` file of --weights, run on onnxruntime")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130


