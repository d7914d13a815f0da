"""`zoo train`: train a registered model with its recipe, or a TOML config's settings (torchrun-aware)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.cli.options import add_amp, add_device
from zoo.cli.output import console, err_console
from zoo.core.errors import ZooError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model with its registry recipe (torchrun-aware)")
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
    add_device(p)
    add_amp(p, training=True)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--out", help="run folder (default: runs/MODEL, or the next free runs/MODEL-N); one holding a "
                                 "run is refused without --resume or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt (without --out: the latest runs/MODEL-N)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in OUT (without --out: runs/MODEL); its files are deleted first")
    p.add_argument("--checkpoint-every", type=float, metavar="SECONDS", dest="checkpoint_seconds",
                   help="write last.pt at most this often (default: after every epoch); always after the last "
                        "epoch. A resume repeats the epochs since, to the same weights")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from the weights of this zoo or published checkpoint (fine-tuning)")
    p.add_argument("--config", help="TOML file: top-level TrainConfig keys, [recipe] and [model_kwargs] tables")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any recipe field")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor override")
    p.add_argument("--json", action="store_true", help="last stdout line: final test metrics as JSON")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import tomllib

    from zoo.core.device import default_device
    from zoo.training.trainer import TrainConfig, train

    settings = {}
    if args.config:
        try:
            settings = tomllib.loads(Path(args.config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ZooError(f"{args.config}: cannot read config ({exc})") from None
    recipe = dict(settings.pop("recipe", {}))
    model_kwargs = dict(settings.pop("model_kwargs", {}))
    recipe.update(parse_assignments(args.set, "--set"))
    model_kwargs.update(parse_assignments(args.model_arg, "--model-arg"))
    for flag in ("epochs", "batch_size", "lr", "backbone_lr", "crop_size"):
        if getattr(args, flag) is not None:
            recipe[flag] = getattr(args, flag)
    flags = {k: getattr(args, k) for k in ("data", "format", "out", "device", "amp", "seed", "workers", "init_from",
                                           "val_fraction", "checkpoint_seconds")
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


def parse_assignments(pairs: list[str] | None, flag: str) -> dict:
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
