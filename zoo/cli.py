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
