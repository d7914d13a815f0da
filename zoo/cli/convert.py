"""`zoo convert`: a published checkpoint (P2PNet, CSRNet-pytorch, lwcc, C-3-Framework) as a zoo checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from zoo.cli.options import add_trust_pickle
from zoo.cli.output import console, print_notes


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help="turn a published checkpoint (P2PNet, CSRNet-pytorch, lwcc, "
                                              "C-3-Framework) into a zoo checkpoint")
    p.add_argument("source", help="the published .pth / .pth.tar file")
    p.add_argument("--model", required=True, help="registered model name it is for (see zoo list)")
    p.add_argument("--out", required=True, help="zoo checkpoint to write (.pt)")
    add_trust_pickle(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from dataclasses import replace

    from zoo.core.files import sha256
    from zoo.models.weights.checkpoint import model_from_checkpoint

    model, checkpoint = model_from_checkpoint(args.source, args.model, trust_pickle=args.trust_pickle)
    print_notes(checkpoint)
    # A zoo checkpoint keeps its training record, threshold and count scale, and names the file it came from
    source = checkpoint.source or {"file": Path(args.source).name, "sha256": sha256(args.source), "layout": "zoo"}
    converted = replace(checkpoint, model_name=args.model, weights=model.state_dict(),
                        model_kwargs=model.registry_kwargs, source=source, notes=[])
    converted.save(Path(args.out), for_inference=True)
    console.print(f"{escape(args.source)} -> {escape(args.out)}: {args.model}, {escape(source['layout'])}",
                  highlight=False, soft_wrap=True)
    return 0
