"""`zoo bench`: speed, FLOPs and memory of registered models (accuracy too with --weights), appended to a CSV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.cli.options import add_device
from zoo.cli.output import console, err_console, warn
from zoo.deploy.export import RUNTIMES

# Under the working directory, never the repository's committed reference rows (results/bench.csv), which a
# user's run would otherwise dirty
DEFAULT_OUT = "bench_results/bench.csv"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="speed, FLOPs, memory (and accuracy with --weights); appends to a CSV")
    p.add_argument("--models", help="comma-separated registered names (default: all)")
    p.add_argument("--resolution", default="768x1024", help="HEIGHTxWIDTH of the timed input")
    p.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,8")
    p.add_argument("--dtype", default="bf16",
                   help="fp32, bf16 or fp16 (CUDA) via autocast, int8 (onnxruntime or openvino, quantized); a list "
                        "compares them")
    p.add_argument("--fp32-reference", action="store_true",
                   help="also run plain fp32 first: the reference of the speedup and count-difference columns")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up includes compiling)")
    p.add_argument("--runtime", default="torch",
                   help=f"{' or '.join(RUNTIMES)} (the others than torch run the model exported to ONNX on the "
                        "CPU: onnxruntime fp32 or int8, openvino fp32, bf16 or int8); a list compares them")
    p.add_argument("--calibration", default="synthetic", metavar="DATA",
                   help="--dtype int8: dataset whose training images calibrate the quantization")
    add_device(p)
    p.add_argument("--iters", type=int, default=3, help="timed forward passes per batch size")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (the first one counts FLOPs)")
    p.add_argument("--train-iters", type=int, default=1, help="timed training steps (after --warmup steps)")
    p.add_argument("--train-step", action=argparse.BooleanOptionalAction, default=True,
                   help="measure training-step throughput at the recipe's crop and batch")
    p.add_argument("--weights", help="MODEL=CHECKPOINT,...: load weights and measure accuracy")
    p.add_argument("--data", default="synthetic", help="dataset whose test split scores --weights")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="CSV the rows are appended to, under the working directory ('' for none); the committed "
                        "reference rows are written only with --out results/bench.csv")
    p.add_argument("--in-process", action="store_true",
                   help="run every model in this process on CPU too (no peak-RSS figure)")
    p.add_argument("--json", action="store_true", help="last stdout line: the rows as one JSON list")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from zoo.bench import BenchConfig, run_bench
    from zoo.bench.config import parse_list, parse_resolution, parse_weights
    from zoo.core.device import default_device
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
        warn(slow_amp_note(cfg.device, "bf16", remedy="compare --dtype fp32"))
    rows = run_bench(cfg, console=err_console if args.json else console)
    if args.json:
        print(json.dumps(rows))
    return 0 if all(row["status"] == "ok" for row in rows) else 1
