"""`zoo export`: a checkpoint's network as an ONNX file, float32 or int8."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from zoo.cli.options import add_checkpoint_model, add_trust_pickle, add_weights
from zoo.cli.output import console, print_notes
from zoo.core.errors import ZooError
from zoo.deploy.export import DEFAULT_OPSET
from zoo.deploy.quantize import CALIBRATION_IMAGES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export",
                              help="write a checkpoint's network as an ONNX file (dynamic batch, height, width)")
    add_checkpoint_model(p)
    add_weights(p)
    p.add_argument("--format", default="onnx", choices=("onnx",), help="file format")
    p.add_argument("--out", required=True, help="file to write (.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--int8", action="store_true",
                   help="int8 static quantization for onnxruntime (weights per channel, activations calibrated)")
    p.add_argument("--calibration", metavar="DATA",
                   help="--int8: dataset whose training images calibrate it (default: the one it was trained on)")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help="--int8: calibration images")
    add_trust_pickle(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from zoo.deploy.export import checkpoint_metadata, export_onnx
    from zoo.inference.predict import load_inference

    inference = load_inference(args.weights, args.model, trust_pickle=args.trust_pickle)
    print_notes(inference.checkpoint)
    if args.calibration and not args.int8:
        raise ZooError("--calibration is for --int8 (its activation ranges are measured on those images)")
    metadata = checkpoint_metadata(args.weights)
    if not args.int8:
        export_onnx(inference.model, Path(args.out), threshold=inference.threshold, opset=args.opset,
                    metadata=metadata)
    else:
        from zoo.deploy.quantize import export_int8

        data = args.calibration or inference.checkpoint.training.get("data", "synthetic")
        export_int8(inference.model, Path(args.out), data, threshold=inference.threshold,
                    images=args.calibration_images, opset=args.opset, metadata=metadata)
    precision = "int8 (QDQ)" if args.int8 else "float32"
    console.print(f"{escape(args.weights)} -> {escape(args.out)}: {inference.model.registry_name}, ONNX opset "
                  f"{args.opset}, {precision}, input (batch, 3, height, width) with height and width multiples of "
                  f"{inference.model.stride}", highlight=False, soft_wrap=True)
    return 0
