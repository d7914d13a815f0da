"""`zoo list`: the registered models and their recipes."""

from __future__ import annotations

import argparse
import json

from rich import box
from rich.markup import escape
from rich.table import Table

from zoo.cli.output import console


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("list", help="registered models and their recipes")
    p.add_argument("--json", action="store_true", help="print the models as one JSON list")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from zoo.models.registry import get_entry, list_models
    from zoo.models.weights.hub import PUBLISHED

    entries = [get_entry(name) for name in list_models()]
    if args.json:
        print(json.dumps([{"name": e.name, "family": e.family, "description": e.description,
                           "published": [t for t, p in PUBLISHED.items() if p.model == e.name]} for e in entries]))
        return 0
    # Three narrow columns of stacked lines leave the description most of an 80-column terminal
    table = Table(title="crowd-zoo models", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("model\n[dim]family[/]", no_wrap=True)
    table.add_column("recipe", no_wrap=True)
    table.add_column("description")
    for e in entries:
        r = e.recipe
        recipe = (f"{r.epochs} epochs, lr {r.lr:g}\nbatch {r.batch_size} images\n"
                  f"x {r.crops_per_image} crops of {r.crop_size} px")
        table.add_row(f"{escape(e.name)}\n[dim]{escape(e.family)}[/]", recipe, escape(e.description))
    console.print(table)
    # Tags fetch and convert published weights on first use: `zoo predict --weights p2pnet.shtech_a photos/`
    tags = Table(title="published weights (--weights TAG)", box=box.SIMPLE_HEAD)
    tags.add_column("tag", no_wrap=True)
    tags.add_column("reported by its authors")
    for tag, entry in PUBLISHED.items():
        tags.add_row(escape(tag), escape(entry.reported))
    console.print(tags)
    return 0
