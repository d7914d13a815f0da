"""The `zoo` command. Each subcommand parses its flags here and calls one function of the package.

User errors (`ZooError`) print one line on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from zoo.errors import ZooError

console = Console()
err_console = Console(stderr=True)


def cmd_list(args) -> int:
    from zoo.registry import get_entry, list_models

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
    from zoo.data.synthetic import generate
    from zoo.paths import data_dir

    root = generate(Path(args.out) if args.out else data_dir() / "synthetic", seed=args.seed)
    console.print(f"synthetic crowds written to [bold]{root}[/]")
    return 0


def cmd_data_check(args) -> int:
    from zoo.data.check import check_dataset

    report = check_dataset(Path(args.path), args.format)
    table = Table(title=f"zoo data check {args.path}", show_header=False)
    for key in ("images", "readable_images", "heads", "min", "mean", "max"):
        value = report[key]
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    table.add_row("problems", str(len(report["problems"])))
    table.add_row("warnings", str(len(report["warnings"])))
    (err_console if args.json else console).print(table)
    for line in report["problems"]:
        err_console.print(f"[red]problem[/] {line}", highlight=False, soft_wrap=True)
    for line in report["warnings"]:
        err_console.print(f"[yellow]warning[/] {line}", highlight=False, soft_wrap=True)
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


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_train(args) -> int:
    import tomllib

    from zoo.train import TrainConfig, train

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
    flags = {k: getattr(args, k) for k in ("data", "format", "out", "device", "amp", "seed", "workers")
             if getattr(args, k) is not None}
    if args.resume:
        flags["resume"] = True
    if args.channels_last:
        flags["channels_last"] = True
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ZooError(f"{args.config}: unknown setting(s) {', '.join(sorted(unknown))}")
    model = args.model or settings.pop("model", None)
    settings.pop("model", None)
    if not model:
        raise ZooError("name the model to train (zoo train MODEL) or set model in --config")
    cfg = TrainConfig(model=model, **{**{"device": _default_device()}, **settings, **flags},
                      recipe=recipe, model_kwargs=model_kwargs)
    result = train(cfg, console=err_console if args.json else console)
    if args.json and result.get("checkpoint"):
        print(json.dumps(result))
    return 0


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
    p.add_argument("--format", default="auto", help="auto, shanghaitech, p2pnet, cells or json")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=cmd_data_check)

    p = sub.add_parser("train", help="train a model with its registry recipe (torchrun-aware)")
    p.add_argument("model", nargs="?", help="registered model name (see zoo list)")
    p.add_argument("--data", help="synthetic (default), cells, or a dataset path")
    p.add_argument("--format", help="dataset format: auto (default), shanghaitech, p2pnet, cells, json")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="images per step over all ranks")
    p.add_argument("--lr", type=float)
    p.add_argument("--backbone-lr", type=float)
    p.add_argument("--crop-size", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), help="mixed precision (default bf16)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--config", help="TOML file: top-level TrainConfig keys, [recipe] and [model_kwargs] tables")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any recipe field")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor override")
    p.add_argument("--json", action="store_true", help="last stdout line: final test metrics as JSON")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
