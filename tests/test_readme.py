"""README.md's command blocks, pasted in order on a fresh clone: every `zoo` line parses, and every file or folder it
reads exists by then (in the repository, or made by an earlier line). Nothing is run: each command's effects on
the files are modelled here from its options (a run folder, a generated dataset, an --out, a published download)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from zoo.cli import build_parser
from zoo.models.registry import list_models
from zoo.models.weights import hub

ROOT = Path(__file__).resolve().parents[1]
CACHE = "~/.cache/crowd-zoo"  # hub.cache_root() without $ZOO_CACHE, as a README reader has it
NAMED_DATA = ("synthetic", "cells")


def bash_commands(text: str) -> list[list[str]]:
    """Each command (split at `&&`) of the ```bash blocks, in order, as words."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1:]
    return commands


class Clone:
    """The files of a fresh clone and those the commands pasted so far made."""

    def __init__(self):
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        self.files = set(tracked.split())
        self.made: set[str] = set()

    def has(self, path: str) -> bool:
        path = os.path.normpath(path)
        return any(path == f or f.startswith(path + "/") or path.startswith(f + "/") and f in self.made
                   for f in self.files | self.made)

    def make(self, *paths: str) -> None:
        self.made |= {os.path.normpath(p) for p in paths}

    def need(self, path: str, line: str) -> None:
        assert self.has(path), f"README: `{line}` names {path}, which no earlier line makes"

    def weights(self, weights: str, line: str) -> None:
        if weights in hub.PUBLISHED:
            entry = hub.PUBLISHED[weights]
            self.make(f"{CACHE}/published/{entry.file}", f"{CACHE}/converted/{entry.tag}.pt")
        else:
            self.need(weights, line)

    def data(self, data: str | None, line: str) -> None:
        if data in (None, "synthetic"):
            self.make("data/synthetic")
        elif data not in NAMED_DATA:
            self.need(data, line)


def follow(clone: Clone, argv: list[str]) -> None:
    """Check what `zoo argv` reads exists, then record what it makes."""
    line = "zoo " + " ".join(argv)
    args = build_parser().parse_args(argv)
    if args.command == "train":
        clone.data(args.data, line)
        if args.init_from:
            clone.weights(args.init_from, line)
        out = args.out or next(f"runs/{args.model}{suffix}" for suffix in ["", *(f"-{n}" for n in range(2, 99))]
                               if not clone.has(f"runs/{args.model}{suffix}"))
        clone.make(f"{out}/best.pt", f"{out}/last.pt")
    elif args.command in ("eval", "predict", "export"):
        clone.weights(args.weights, line)
        if args.command == "eval" and args.data:
            clone.data(args.data, line)
        if args.command == "predict":
            inputs = [w for w in [args.model, *args.inputs] if w and w not in list_models()]
            for item in inputs:
                clone.need(item, line)
        if getattr(args, "out", None):
            clone.make(args.out)
    elif args.command == "data" and getattr(args, "path", None):
        if args.path not in NAMED_DATA:
            clone.need(args.path, line)
    elif args.command == "convert":
        clone.need(args.source, line)
        clone.make(args.out)
    elif args.command == "bench":
        for pair in filter(None, (args.weights or "").split(",")):
            clone.weights(pair.split("=", 1)[1], line)
        if args.out:
            clone.make(args.out)


def readme_zoo_lines(text: str) -> list[list[str]]:
    return [words[1:] for words in bash_commands(text) if words and Path(words[0]).name == "zoo"]


def test_the_readme_pasted_in_order_names_only_files_that_exist_by_then():
    clone = Clone()
    commands = readme_zoo_lines((ROOT / "README.md").read_text())
    assert commands and commands[0][0] == "train"  # the set-up command trains first
    for argv in commands:
        follow(clone, argv)


def test_the_check_catches_a_checkpoint_no_earlier_line_makes():
    clone = Clone()
    train, evaluate = readme_zoo_lines("```bash\nzoo train csrnet\nzoo eval --weights runs/csrnet_bn/best.pt\n```\n")
    follow(clone, train)
    with pytest.raises(AssertionError, match="runs/csrnet_bn/best.pt"):
        follow(clone, evaluate)


def test_a_second_run_of_a_model_gets_the_next_folder_and_a_tag_fills_the_cache():
    clone = Clone()
    first, second, evaluate = readme_zoo_lines("```bash\nzoo train csrnet && zoo train csrnet\n"
                                               "zoo eval --weights runs/csrnet-2/best.pt\n```\n")
    follow(clone, first)
    follow(clone, second)
    follow(clone, evaluate)
    convert = ["convert", f"{CACHE}/published/SHTechA.pth", "--model", "p2pnet", "--out", "a.pt"]
    with pytest.raises(AssertionError, match="SHTechA.pth"):
        follow(clone, convert)
    follow(clone, ["predict", "--weights", "p2pnet.shtech_a", "data/synthetic/test_data/images/"])
    follow(clone, convert)
