"""The `zoo` parser built from its command modules: where positionals may go, what help states, what `zoo list`
and `zoo data check synthetic` print."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from zoo.cli import bench, build_parser
from zoo.cli.options import CommandParser
from zoo.core.paths import data_dir
from zoo.data.check import check_dataset
from zoo.models.registry import get_entry, list_models


def zoo(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_predict_takes_positionals_on_both_sides_of_the_options():
    args = build_parser().parse_args(["predict", "p2pnet", "--weights", "w.pt", "a.jpg", "--out", "o", "b.jpg"])
    assert (args.model, args.inputs, args.weights, args.out) == ("p2pnet", ["a.jpg", "b.jpg"], "w.pt", "o")


def test_help_states_a_default_only_where_there_is_one():
    parser = CommandParser(prog="t")
    parser.add_argument("--iters", type=int, default=3, help="passes")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--out", default="x.csv", help="file (default: beside the input)")
    text = parser.format_help()
    assert "passes (default: 3)" in text and "seed (default: 0)" in text
    assert text.count("default") == 3  # --device has none, --fast is off, --out says its own


def test_bench_help_shows_every_default():
    result = zoo("bench", "--help", COLUMNS="1000")
    assert result.returncode == 0, result.stderr
    parser = bench.add_parser(CommandParser(prog="zoo").add_subparsers())
    stated = [a for a in parser._actions if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)]
    assert stated and all(f"(default: {a.default})" in result.stdout for a in stated)
    assert "(default: None)" not in result.stdout and "(default: False)" not in result.stdout


def test_list_fits_an_80_column_terminal():
    result = zoo("list", COLUMNS="80")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout  # nothing cut short
    words = result.stdout.split()
    for name in list_models():
        entry = get_entry(name)
        if entry.module.startswith("zoo."):
            assert name in words and set(entry.description.split()) <= set(words)


def test_data_check_synthetic_checks_the_generated_default(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))  # its own data folder: other tests leave partial ones behind
    result = zoo("data", "check", "synthetic", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["images"] > 0 and report["problems"] == []
    assert report == json.loads(json.dumps(check_dataset(data_dir() / "synthetic")))
