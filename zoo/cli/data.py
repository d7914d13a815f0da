"""`zoo data synth` and `zoo data check`: generate the synthetic default dataset, check any dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from zoo.cli.output import console, err_console


def add_parser(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser("data", help="datasets: generate the synthetic default, check a dataset")
    commands = data.add_subparsers(dest="data_command", required=True)
    p = commands.add_parser("synth", help="generate the synthetic crowd dataset (ShanghaiTech layout)")
    p.add_argument("--out", default=None, help="output folder (default: data/synthetic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images and heads")
    p.set_defaults(run=run_synth)
    p = commands.add_parser("check", help="read every sample and report counts and problems")
    p.add_argument("path", help="a dataset folder or file, or synthetic or cells as --data names them")
    p.add_argument("--format", default="auto", help="auto, shanghaitech, p2pnet, cells, json or coco")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(run=run_check)
    return data


def run_synth(args) -> int:
    from zoo.core.paths import data_dir
    from zoo.data.synthetic import generate

    root = generate(Path(args.out) if args.out else data_dir() / "synthetic", seed=args.seed)
    console.print(f"synthetic crowds written to [bold]{escape(str(root))}[/]")
    return 0


def run_check(args) -> int:
    from zoo.data.check import check_dataset
    from zoo.data.sources import dataset_path

    report = check_dataset(dataset_path(args.path), args.format)
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
