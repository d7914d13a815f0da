"""`zoo info WEIGHTS | MODEL`: a model card. What the weights are (model and options, parameters, FLOPs of one
forward pass at a stated input size), what input they expect, how they were trained and chosen, what they scored
(with the rows the numbers come from) and, for converted weights, the file they came from and its sha256.

The card of weights is the checkpoint's own record (zoo.models.weights.checkpoint.Checkpoint.model_card) with the
counts measured here; the card of a registered model name is its registry entry (family, description, recipe).
FLOPs are counted by torch's counter on the meta device: shapes only, no arithmetic, so any size costs nothing.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from rich.markup import escape

from zoo.cli.options import add_trust_pickle
from zoo.cli.output import console
from zoo.core.errors import ZooError

SIZE = (768, 1024)  # height, width of the input FLOPs are stated at


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="a model card: what a weights file or a registered model is")
    p.add_argument("target", metavar="WEIGHTS_OR_MODEL", help="a weights file, or a registered model name")
    p.add_argument("--model", help="the model a published (not zoo) weights file is for")
    p.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}", metavar="HxW",
                   help="input height x width at which FLOPs are counted")
    p.add_argument("--json", action="store_true", help="print the card as one JSON object")
    add_trust_pickle(p)
    p.set_defaults(run=run)
    return p


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or 0 in (int(match[1]), int(match[2])):
        raise ZooError(f"--size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 768x1024")
    return int(match[1]), int(match[2])


def card_of(target: str, model: str | None = None, size: tuple[int, int] = SIZE, trust_pickle: bool = False
            ) -> dict:
    """The model card of weights file or registered model `target`, with parameters and FLOPs at `size`."""
    from dataclasses import asdict

    from zoo.models.registry import build_model, get_entry, list_models
    from zoo.models.weights.checkpoint import Checkpoint, model_from_checkpoint

    if Path(target).is_file():
        network, checkpoint = model_from_checkpoint(target, model, trust_pickle=trust_pickle)
        card = {"weights": str(target), **checkpoint.model_card()}
        card["options"] = dict(network.registry_kwargs)  # with the options the weights imply
    elif target in list_models():
        network = build_model(target)
        entry = get_entry(target)
        # The card of an untrained checkpoint of the entry: the same keys as trained weights', defaults filled in.
        card = {"weights": None, **Checkpoint(target, weights={}, recipe=asdict(entry.recipe)).model_card()}
    else:
        raise ZooError(f"{target}: neither a weights file nor a registered model ({', '.join(list_models())})")
    entry = get_entry(card["model"])
    card["family"], card["description"] = entry.family, entry.description
    card["parameters"] = sum(p.numel() for p in network.parameters())
    card["flops"] = {"input": f"{size[0]}x{size[1]}", "flops": forward_flops(network, size),
                     "counted": "torch.utils.flop_counter, 2 per multiply-accumulate, batch of one"}
    return card


def forward_flops(network, size: tuple[int, int]) -> int:
    """FLOPs of one forward pass of a (1, 3, H, W) input, counted on a copy of `network` on the meta device."""
    import copy

    import torch

    from zoo.bench.measure import count_flops

    shadow = copy.deepcopy(network).to("meta").eval()
    with torch.no_grad():
        return count_flops(shadow, torch.empty(1, 3, *size, device="meta"))


def run(args) -> int:
    card = card_of(args.target, args.model, parse_size(args.size), args.trust_pickle)
    if args.json:
        print(json.dumps(card, default=str))
        return 0
    for line in card_lines(card):
        console.print(escape(line), highlight=False, soft_wrap=True)
    return 0


def card_lines(card: dict) -> list[str]:
    def plain(value) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k}={plain(v)}" for k, v in value.items()) or "none"
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    flops = card["flops"]
    lines = [f"model: {card['model']} ({card['family']} family) {card['description']}".rstrip(),
             f"weights: {card['weights'] or 'none (the registered model; fresh weights)'}",
             f"options: {plain(card['options'])}",
             f"parameters: {card['parameters']:,}",
             f"FLOPs: {flops['flops'] / 1e9:,.1f} G at {flops['input']} ({flops['counted']})",
             f"input: RGB in [0, 1], normalised with mean {card['normalization']['mean']} "
             f"std {card['normalization']['std']}, padded to the model's stride",
             "threshold: " + (plain(card["threshold"]) if card["threshold"] is not None else "the recipe's")
             + f", count scale: {plain(card['count_scale'])}"
             + (f", count floor: {plain(card['count_floor'])} people" if card["count_floor"] else "")]
    if card["training"]:
        lines.append(f"training: {plain(card['training'])}")
    if card["recipe"]:
        lines.append(f"recipe: {plain(card['recipe'])}")
    selection = card["selection"]
    if selection:
        best = "not validated" if selection["best"] is None else f"best {plain(selection['best'])} at epoch " \
                                                                  f"{selection['epoch']}"
        lines.append(f"selected on: validation {selection['metric']} ({selection['direction']} is better), {best}")
    if card["selected_row"]:
        lines.append(f"  from the row: {plain(card['selected_row'])}")
    for row in card["results"]:
        lines.append(f"measured: {plain(row)}")
    if card["source"]:
        source = card["source"]
        lines.append(f"converted from: {source.get('file')} (sha256 {source.get('sha256')}, layout "
                     f"{source.get('layout')})")
    if card["provenance"]:
        lines.append(f"written by: {plain(card['provenance'])}")
    if card["weights"] and not (card["training"] or card["source"]):
        lines.append("no training record: these weights do not say how they were made")
    return lines
