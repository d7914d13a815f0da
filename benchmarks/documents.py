"""The generated parts of the documents: every table of measured numbers and every results CSV's columns, made
from results/*.csv, so that no number in the documents is copied by hand.

    python -m benchmarks.documents            # rewrite the blocks whose CSVs changed
    python -m benchmarks.documents --check    # write nothing; exit 1 naming the documents that are out of date

A document keeps a generated block between a `<!-- generated: NAME -->` line and a `<!-- end generated -->`
line; the text outside the markers is written by hand and left as it is. DOCUMENTS says which blocks each
document holds, TABLES how each block is made. Every number in a table of measurements is a `Number` naming the
CSV, rows, column and reduction it comes from, and every other value a `Text` naming its cell, so
tests/benchmarks/test_documents.py recomputes each one from the CSV. A column table lists a CSV's header as it
is; a column without a meaning in COLUMN_MEANINGS stops the generator, so a new column cannot go undocumented.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->\n", flags=re.MULTILINE)
END = "<!-- end generated -->"


# ------------------------------------------------------------------------------------------------ table cells


@dataclass(frozen=True)
class Number:
    """A value computed from a CSV: `reduction` over `column` of the data rows `rows` (0-based) of `file`."""

    file: str
    column: str
    rows: tuple[int, ...]
    reduction: str
    value: float
    fmt: str

    def __str__(self) -> str:
        return "" if math.isnan(self.value) else format(self.value, self.fmt)


@dataclass(frozen=True)
class Text:
    """A CSV cell as written (`text` is the cell, or its start: a date shown to the day)."""

    file: str
    column: str
    row: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Header:
    """A column name of a CSV's header, in a table of columns."""

    file: str
    column: str

    def __str__(self) -> str:
        return f"`{self.column}`"


Fragment = str | Number | Text | Header
Cell = tuple[Fragment, ...]


@dataclass
class Table:
    """A markdown table. `kind` is "measurements" (every digit in its body comes from a Number or a Text) or
    "columns" (a CSV's header, column by column, with what each holds)."""

    header: tuple[str, ...]
    kind: str = "measurements"
    rows: list[tuple[Cell, ...]] = field(default_factory=list)

    def add(self, *cells: Fragment | Cell) -> None:
        if len(cells) != len(self.header):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.header)} columns")
        self.rows.append(tuple(c if isinstance(c, tuple) else (c,) for c in cells))

    def render(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        for row in self.rows:
            cells = ["".join(str(f) for f in cell) for cell in row]
            if any("|" in c or "\n" in c for c in cells):
                raise ZooError(f"a table cell holds '|' or a line break: {cells}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the CSVs

REDUCTIONS: dict[str, Callable[[pd.Series], float]] = {
    "value": lambda s: s.iloc[0] if len(s) == 1 else math.nan,
    "mean": lambda s: s.mean(),
    "std": lambda s: s.std(ddof=1),  # over draws: the sample standard deviation
    "count": lambda s: s.count(),
    "max": lambda s: s.max(),
}


class Results:
    """The CSVs of a results folder, read once: as numbers (pandas' types) and as the text of each cell."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._numbers: dict[str, pd.DataFrame] = {}
        self._text: dict[str, pd.DataFrame] = {}

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("*.csv"))

    def numbers(self, file: str) -> pd.DataFrame:
        if file not in self._numbers:
            self._numbers[file] = pd.read_csv(self._path(file))
        return self._numbers[file]

    def text(self, file: str) -> pd.DataFrame:
        if file not in self._text:
            self._text[file] = pd.read_csv(self._path(file), dtype=str, keep_default_na=False)
        return self._text[file]

    def header(self, file: str) -> list[str]:
        return list(self.text(file).columns)

    def _path(self, file: str) -> Path:
        path = self.folder / file
        if not path.is_file():
            raise ZooError(f"{path}: no such results file (the documents are generated from it)")
        return path

    # cells

    def number(self, file: str, column: str, rows, reduction: str = "value", fmt: str = ".2f") -> Number:
        rows = tuple(int(r) for r in rows)
        series = self.numbers(file)[column].iloc[list(rows)]
        return Number(file, column, rows, reduction, float(REDUCTIONS[reduction](series)), fmt)

    def value(self, file: str, column: str, row: int, fmt: str = ".2f") -> Number:
        return self.number(file, column, (row,), "value", fmt)

    def cell(self, file: str, column: str, row: int, length: int | None = None) -> Text:
        text = self.text(file)[column].iloc[int(row)]
        return Text(file, column, int(row), text[:length] if length else text)

    def day(self, file: str, row: int) -> Text:
        return self.cell(file, "date", row, length=len("YYYY-MM-DD"))

    def spread(self, file: str, column: str, rows, fmt: str = ".2f") -> Cell:
        """One row's value, or the mean ± the standard deviation of several."""
        rows = tuple(rows)
        if len(rows) == 1 or self.numbers(file)[column].iloc[list(rows)].count() < 2:
            return (self.number(file, column, rows, "mean", fmt),)
        return self.number(file, column, rows, "mean", fmt), " ± ", self.number(file, column, rows, "std", fmt)

    def distinct(self, file: str, column: str, rows) -> Cell:
        """The different texts of `column` over `rows`, in order of first appearance, joined by commas."""
        frame, seen, out = self.text(file), set(), []
        for row in rows:
            value = frame[column].iloc[int(row)]
            if value not in seen:
                seen.add(value)
                out += [", "] * bool(out) + [self.cell(file, column, row)]
        return tuple(out)


# ------------------------------------------------------------------------------------------------ measurements

COMPARISON_FILES = ("cells.csv", "synthetic.csv", "street.csv")
GROUP = ["budget", "device", "model", "n_train"]  # rows of one group are draws of one run: never mixed otherwise


def groups(results: Results, file: str) -> list[tuple[int, ...]]:
    """Row numbers of each (budget, device, model, n_train) group, in order of first appearance."""
    found: dict[tuple[str, ...], list[int]] = {}
    for row, key in enumerate(results.text(file)[GROUP].itertuples(index=False, name=None)):
        found.setdefault(key, []).append(row)
    return [tuple(rows) for rows in found.values()]


def comparison(results: Results) -> Table:
    table = Table(("protocol", "budget", "device", "model", "N", "draws", "epochs", "amp", "MAE", "MSE (root)",
                   "F1@8", "views", "MAE, views"))
    for file in COMPARISON_FILES:
        for rows in groups(results, file):
            first = rows[0]
            table.add(*(results.cell(file, c, first) for c in ("protocol", "budget", "device", "model", "n_train")),
                      results.number(file, "draw", rows, "count", ".0f"), results.distinct(file, "epochs", rows),
                      results.distinct(file, "amp", rows), results.spread(file, "mae", rows),
                      results.spread(file, "mse", rows), results.number(file, "f1_8", rows, "mean"),
                      results.number(file, "test_views", rows, "max", ".0f"), results.spread(file, "mae_views", rows))
    return table


def headline(results: Results) -> Table:
    """VGG cells at the largest N trained: for each model, the budget with the lowest mean test MAE."""
    file, best = "cells.csv", {}
    frame = results.numbers(file)
    largest = frame["n_train"].max()
    for rows in groups(results, file):
        model, n_train = frame["model"].iloc[rows[0]], frame["n_train"].iloc[rows[0]]
        mae = frame["mae"].iloc[list(rows)].mean()
        if n_train == largest and (model not in best or mae < best[model][0]):
            best[model] = (mae, rows)
    table = Table(("model", "budget", "N", "draws", "test MAE", "MAE, mean count of the views", "views", "F1@8"))
    for _, rows in sorted(best.values()):
        table.add(*(results.cell(file, c, rows[0]) for c in ("model", "budget", "n_train")),
                  results.number(file, "draw", rows, "count", ".0f"), results.spread(file, "mae", rows),
                  results.spread(file, "mae_views", rows), results.number(file, "test_views", rows, "max", ".0f"),
                  results.number(file, "f1_8", rows, "mean"))
    return table


#: the README's picture: `zoo predict --zones docs/zones.cells.json` with this search trial's checkpoint on a cells
#: test image (a picture only: the test images choose nothing, and the MAE shown is the trial's validation MAE)
SHOWCASE = ("search_v1.csv", "fair-v1/search/p2pnet/lr3e-4@128")


def showcase(results: Results) -> Table:
    file, row_id = SHOWCASE
    table = Table(("checkpoint", "model", "trained on", "optimizer steps", "crop", "precision", "validation MAE",
                   "commit"))
    rows = [r for r in range(len(results.text(file))) if results.text(file)["row_id"].iloc[r] == row_id]
    if len(rows) != 1:
        raise ZooError(f"results/{file}: the README's picture needs exactly one row {row_id!r}, found {len(rows)}")
    row = rows[0]
    table.add(("`", results.cell(file, "run", row), "/best.pt`"), results.cell(file, "model", row),
              ("VGG cells, ", results.value(file, "n_train", row, ".0f"), " images (search draw)"),
              results.value(file, "steps", row, ".0f"),
              (results.value(file, "crop_size", row, ".0f"), " px"), results.cell(file, "precision", row),
              results.value(file, "val_mae_best", row, ".2f"),
              results.cell(file, "git_commit", row))
    return table


def fresh_clone(results: Results) -> Table:
    """The latest timed fresh clone (benchmarks/fresh_clone.py): the README's commands, step by step."""
    file = "fresh_clone.csv"
    table = Table(("step", "command", "seconds", "exit", "load before", "load after", "machine", "cores", "commit",
                   "date"))
    if file not in results.files():
        return table
    frame = results.text(file)
    latest = [row for row in range(len(frame)) if frame["run"].iloc[row] == frame["run"].max()]
    for row in latest:
        table.add(results.cell(file, "step", row), ("`", results.cell(file, "command", row), "`"),
                  results.value(file, "seconds", row, ".0f"), results.cell(file, "rc", row),
                  results.value(file, "load_before", row, ".2f"), results.value(file, "load_after", row, ".2f"),
                  results.cell(file, "device_name", row), results.cell(file, "cpus", row),
                  results.cell(file, "git_commit", row), results.day(file, row))
    return table


SPEED_FILE = "published_speed_v2.csv"
#: (code, runtime, dtype, channels_last, compile) as the CSV writes them: the published code's plain fp32 forward
#: pass, and the zoo's default inference path
PUBLISHED_FP32 = ("published", "torch", "fp32", "False", "False")
PUBLISHED_BF16 = ("published", "torch", "bf16", "True", "False")
# `zoo predict`'s defaults (zoo.cli.options.compiles): photos eager, videos, cameras and streams compiled
ZOO_DEFAULT_PHOTOS = ("zoo", "torch", "bf16", "True", "False")
ZOO_DEFAULT_VIDEOS = ("zoo", "torch", "bf16", "True", "True")
SETTING = ["code", "runtime", "dtype", "channels_last", "compile"]


def speed(results: Results) -> Table:
    """The README's speed table, from the latest run of published_speed_v2.csv: per model, the published fp32 and
    bf16 rows, the zoo's two default paths (photos; videos and streams) against the published code at their
    setting, and its fastest path (the zoo row of `ok` status with the lowest median)."""
    file = SPEED_FILE
    table = Table(("model", "published fp32, ms", "published bf16 + channels_last, ms",
                   "zoo default, photos (eager bf16 + channels_last), ms", "x published, same setting",
                   "zoo default, videos and streams (compiled bf16 + channels_last), ms", "x published, same setting",
                   "fastest zoo path", "ms", "x published fp32", "device", "threads", "loaded", "date"))
    if file not in results.files():  # no run has written it yet: the table's header alone
        return table
    frame, numbers = results.text(file), results.numbers(file)
    latest = [r for r in range(len(frame)) if frame["run"].iloc[r] == frame["run"].max()]
    ok = [r for r in latest if frame["status"].iloc[r] == "ok" and not math.isnan(numbers["median_ms"].iloc[r])]

    def timed(row: int | None, column: str, fmt: str) -> Cell:
        if row is None or math.isnan(numbers[column].iloc[row]):
            return ()
        return (results.value(file, column, row, fmt),)

    for model in dict.fromkeys(frame["model"].iloc[r] for r in latest):
        mine = [r for r in ok if frame["model"].iloc[r] == model]
        setting = {tuple(frame[SETTING].iloc[r]): r for r in mine}
        photos, videos = setting.get(ZOO_DEFAULT_PHOTOS), setting.get(ZOO_DEFAULT_VIDEOS)
        zoo = [r for r in mine if frame["code"].iloc[r] == "zoo"]
        fastest = min(zoo, key=lambda r: numbers["median_ms"].iloc[r]) if zoo else None
        first = next(r for r in latest if frame["model"].iloc[r] == model)
        table.add(results.cell(file, "model", first), timed(setting.get(PUBLISHED_FP32), "median_ms", ".0f"),
                  timed(setting.get(PUBLISHED_BF16), "median_ms", ".0f"),
                  timed(photos, "median_ms", ".0f"), timed(photos, "speedup_vs_published_same_setting", ".2f"),
                  timed(videos, "median_ms", ".0f"), timed(videos, "speedup_vs_published_same_setting", ".2f"),
                  () if fastest is None else path_cell(results, file, fastest),
                  timed(fastest, "median_ms", ".0f"), timed(fastest, "speedup_vs_published_fp32", ".2f"),
                  results.cell(file, "device_name", first), results.cell(file, "cpu_threads", first),
                  results.cell(file, "loaded", first), results.day(file, first))
    return table


def path_cell(results: Results, file: str, row: int) -> Cell:
    """A zoo row's path in words: `torch bf16, channels_last, compiled`, `openvino int8`."""
    frame = results.text(file)
    return (results.cell(file, "runtime", row), " ", results.cell(file, "dtype", row),
            *((", channels_last",) if frame["channels_last"].iloc[row] == "True" else ()),
            *((", compiled",) if frame["compile"].iloc[row] == "True" else ()))


#: A table with a line per CSV row: (heading, column, how it is shown): TEXT as written, DAY a date to the day,
#: else the number format of its value.
TEXT, DAY = "text", "day"
ROW_TABLES: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "synthetic-cost": ("synthetic.csv", (
        ("model", "model", TEXT), ("budget", "budget", TEXT), ("device", "device", TEXT),
        ("resolution", "bench_resolution", TEXT), ("dtype", "bench_dtype", TEXT), ("params", "params_total", ".0f"),
        ("GFLOPs", "gflops_per_image", ".1f"), ("median ms", "latency_ms_median", ".0f"),
        ("images/s", "images_per_s", ".3f"), ("training images/s", "train_images_per_s", ".2f"),
        ("peak RSS MiB", "peak_rss_mb", ".0f"))),
    "bench": ("bench.csv", (
        ("date", "date", DAY), ("device", "device_name", TEXT), ("threads", "cpu_threads", TEXT),
        ("model", "model", TEXT), ("runtime", "runtime", TEXT), ("dtype", "dtype", TEXT),
        ("channels_last", "channels_last", TEXT), ("compile", "compile", TEXT), ("resolution", "resolution", TEXT),
        ("batch", "batch_size", TEXT), ("status", "status", TEXT), ("GFLOPs", "gflops_per_image", ".1f"),
        ("median ms", "latency_ms_median", ".0f"), ("x fp32", "speedup_vs_fp32", ".2f"),
        ("training images/s", "train_images_per_s", ".2f"), ("peak RSS MiB", "peak_rss_mb", ".0f"),
        ("data", "data", TEXT), ("MAE", "mae", ".2f"))),
    "published-speed": ("published_speed.csv", (
        ("date", "date", DAY), ("commit", "git_commit", TEXT), ("model", "model", TEXT), ("code", "code", TEXT),
        ("runtime", "runtime", TEXT), ("dtype", "dtype", TEXT), ("channels_last", "channels_last", TEXT),
        ("compile", "compile", TEXT), ("rounds", "rounds", TEXT), ("median ms", "median_ms", ".0f"),
        ("p10 ms", "p10_ms", ".0f"), ("p90 ms", "p90_ms", ".0f"),
        ("x published fp32", "speedup_vs_published_fp32", ".2f"),
        ("x published, same setting", "speedup_vs_published_same_setting", ".2f"))),
    "published-speed-v2": ("published_speed_v2.csv", (
        ("date", "date", DAY), ("commit", "git_commit", TEXT), ("device", "device_name", TEXT),
        ("threads", "cpu_threads", TEXT), ("load", "load_1m", ".2f"), ("loaded", "loaded", TEXT),
        ("model", "model", TEXT), ("code", "code", TEXT), ("runtime", "runtime", TEXT), ("dtype", "dtype", TEXT),
        ("channels_last", "channels_last", TEXT), ("compile", "compile", TEXT), ("resolution", "resolution", TEXT),
        ("rounds", "rounds", TEXT), ("status", "status", TEXT), ("median ms", "median_ms", ".0f"),
        ("p10 ms", "p10_ms", ".0f"), ("p90 ms", "p90_ms", ".0f"), ("GFLOPs", "gflops_per_image", ".1f"),
        ("GFLOP/s", "achieved_gflops_per_s", ".0f"), ("ceiling GFLOP/s", "ceiling_gflops_per_s", ".0f"),
        ("ceiling on", "ceiling_instructions", TEXT), ("of ceiling", "ceiling_fraction", ".0%"),
        ("x published fp32", "speedup_vs_published_fp32", ".2f"),
        ("x published, same setting", "speedup_vs_published_same_setting", ".2f"))),
    "tiling": ("tiling.csv", (
        ("date", "date", DAY), ("device", "device_name", TEXT), ("model", "model", TEXT),
        ("resolution", "resolution", TEXT), ("mode", "mode", TEXT), ("tile", "tile", ".0f"),
        ("overlap", "overlap", ".0f"), ("windows", "windows", ".0f"), ("status", "status", TEXT),
        ("seconds", "seconds", ".1f"), ("peak RSS MiB", "peak_rss_mb", ".0f"),
        ("estimated MiB", "estimated_peak_rss_mb", ".0f"), ("count vs whole", "count_rel_diff_vs_whole", ".2g"),
        ("F1 vs whole", "f1_vs_whole", ".3f"))),
    "int8": ("int8.csv", (
        ("date", "date", DAY), ("commit", "git_commit", TEXT), ("model", "model", TEXT), ("data", "data", TEXT),
        ("quantization", "quantization", TEXT), ("calibration images", "calibration_images", ".0f"),
        ("total", "total_rel_diff", "+.2%"), ("mean image", "mean_image_rel_diff", ".2%"),
        ("largest image", "max_image_rel_diff", ".2%"), ("MAE fp32", "mae_fp32", ".2f"),
        ("MAE int8", "mae_int8", ".2f"), ("accepted", "accepted", TEXT))),
    "empty": ("empty.csv", (
        ("model", "model", TEXT), ("family", "family", TEXT), ("stage", "stage", TEXT), ("floor", "floor", ".2f"),
        ("reached", "floor_reached", TEXT), ("kind", "kind", TEXT), ("images", "n_images", ".0f"),
        ("mean count", "mean_count", ".2f"), ("max count", "max_count", ".2f"),
        ("share >= 0.5", "share_at_least_half", ".2f"), ("validation empties", "val_empty_mean", ".2f"),
        ("validation MAE", "val_mae", ".2f"), ("its spread", "val_mae_spread", ".2f"), ("test MAE", "test_mae", ".2f"),
        ("device", "device_name", TEXT), ("commit", "git_commit", TEXT), ("date", "date", DAY))),
    "mutation": ("mutation.csv", (
        ("date", "date", TEXT), ("commit", "commit", TEXT), ("stage", "stage", TEXT), ("module", "module", TEXT),
        ("scope", "scope", TEXT), *((c, c, ".0f") for c in ("mutants", "killed", "timeout", "survived", "no_tests",
                                                             "not_checked")))),
    "train-speed": ("train_speed.csv", (
        ("date", "date", DAY), ("commit", "git_commit", TEXT), ("device", "device_name", TEXT),
        ("threads", "threads", TEXT), ("load", "load_1m", ".2f"), ("loaded", "loaded", TEXT),
        ("model", "model", TEXT), ("code", "code", TEXT), ("precision", "precision", TEXT),
        ("channels_last", "channels_last", TEXT), ("compiled", "compiled", TEXT), ("batch", "batch", TEXT),
        ("crop", "crop", TEXT), ("status", "status", TEXT), ("crops/s", "crops_per_s", ".2f"),
        ("median ms", "step_ms_median", ".0f"), ("p10 ms", "step_ms_p10", ".0f"), ("p90 ms", "step_ms_p90", ".0f"),
        ("data ms", "data_ms_per_batch", ".0f"), ("GFLOPs/crop", "train_gflops_per_crop", ".1f"),
        ("of ceiling", "ceiling_fraction", ".0%"), ("x published fp32", "speedup_vs_published_fp32", ".2f"),
        ("x published, same precision", "speedup_vs_published_same_precision", ".2f"))),
}


def row_table(results: Results, file: str, spec: tuple[tuple[str, str, str], ...]) -> Table:
    table = Table(tuple(heading for heading, _, _ in spec))
    if file not in results.files():  # no run has written it yet: the table's header alone
        return table
    for row in range(len(results.text(file))):
        table.add(*(results.cell(file, column, row) if how == TEXT else results.day(file, row) if how == DAY
                    else results.value(file, column, row, how) for _, column, how in spec))
    return table


# ------------------------------------------------------------------------------------------------ columns

#: What a column holds wherever it appears, unless COLUMN_MEANINGS gives its file's own meaning.
SHARED_MEANINGS = {
    "date": "start of the run, UTC, ISO 8601 (`2025-01-31T12:00:00+00:00`)",
    "git_commit": "short commit of the checkout that ran it; `+dirty` when tracked code had uncommitted changes "
                  "(documentation does not count); `unknown` outside git",
    "device": "torch device (`cpu`, `cuda`, `cuda:1`)",
    "device_name": "`torch.cuda.get_device_name`, or the CPU model from /proc/cpuinfo with the instructions "
                   "torch's kernels use there, e.g. `AMD EPYC (AVX2)` or `AMD EPYC (AVX512, BF16, VNNI)` (older "
                   "rows give the model alone)",
    "cpu_threads": "`torch.get_num_threads()` of the run",
    "torch": "torch version",
    "torchvision": "torchvision version",
    "timm": "timm version",
    "onnxruntime": "onnxruntime version, where onnxruntime ran",
    "model": "registered model name (`zoo list`; CSRNet rows are `csrnet_bn`, the batch-norm variant, unless "
             "they compare the paper's `csrnet`)",
    "family": "`points`, `density` or `heatmap`",
    "runtime": "what ran the forward pass: `torch` (eager, or compiled when `compile` is True) or `onnxruntime` "
               "(the exported graph)",
    "dtype": "`fp32`, `bf16` or `fp16` (the last two through autocast; fp16 on CUDA only), or `int8` "
             "(onnxruntime: static quantization)",
    "channels_last": "True when model and input used `torch.channels_last`",
    "compile": "True when the model ran through `torch.compile` (inference weights frozen); always False on "
               "`onnxruntime` rows",
    "resolution": "input `HEIGHTxWIDTH` in pixels",
    "peak_rss_mb": "CPU only: peak resident memory (Linux `VmHWM`) of the fresh process that ran it, MiB",
    "cuda_peak_allocated_mb": "CUDA only: `torch.cuda.max_memory_allocated` during the unit, MiB",
    "gflops_per_image": "forward GFLOPs per image at the resolution (GFLOPs = 2 x GMACs)",
    "latency_ms_median": "median wall time of one forward pass of the batch, ms",
    "images_per_s": "batch size / median latency",
    "train_images_per_s": "images per second of full training steps (loss, backward, clipping, optimizer)",
    "params_total": "number of parameters",
    "mae": "mean absolute count error per image",
    "mse": "the **root** of the mean squared count error (the crowd-counting convention), not the mean square",
    "nae": "mean of absolute error / true count over images with people",
    "f1_4": "F1 of one-to-one point matching within 4 px",
    "f1_8": "F1 of one-to-one point matching within 8 px",
}

BENCH = {
    "weights": "checkpoint loaded, empty for the seeded random initialization",
    "batch_size": "images per timed forward pass",
    "iters": "timed passes",
    "warmup": "untimed passes (and untimed training steps) before them",
    "status": "`ok`; `oom` (out of memory at this batch size: no timings); `train_oom` (inference measured, the "
              "training step ran out of memory); `error` (see `note`)",
    "note": "what went wrong, when `status` is not `ok`",
    "params_trainable": "parameters with `requires_grad`",
    "latency_ms_p90": "90th percentile of the same, ms (linear interpolation between passes)",
    "achieved_gflops_per_s": "`gflops_per_image` x `images_per_s`",
    "ceiling_gflops_per_s": "the ceiling at this dtype (zoo.bench.ceiling), measured in the same run",
    "ceiling_fraction": "`achieved_gflops_per_s` / `ceiling_gflops_per_s`",
    "speedup_vs_fp32": "`images_per_s` / that of the reference row: the first fp32 row of the same model and batch "
                       "size in the run (`--fp32-reference` makes it plain torch eager fp32 without channels_last)",
    "train_images_per_s": "images per second of full training steps; measured once per model and setting, "
                          "repeated on its other batch-size rows",
    "train_batch_size": "images per training step (recipe batch size x crops per image)",
    "train_crop": "training crop side in pixels (the recipe's)",
    "peak_rss_mb": "CPU only: peak resident memory of the fresh process that built the model and ran the timed "
                   "passes, MiB (empty with `--in-process`)",
    "cuda_peak_reserved_mb": "CUDA only: `torch.cuda.max_memory_reserved` during the unit, MiB",
    "mean_count": "mean predicted count over the batch of the last timed pass (the family's count at the recipe "
                  "threshold)",
    "count_rel_diff": "(`mean_count` - the reference's) / the reference's, reference as for `speedup_vs_fp32`; "
                      "empty when the reference count is 0",
    "data": "dataset whose test split gave the accuracy columns (with `--weights`)",
}

COMPARISON = {
    "protocol": "`cells`, `synthetic` or `street`",
    "budget": "the budget's name (`benchmarks/budgets.py`; `--budget cpu` writes `cpu-reduced`)",
    "device": "torch device the run trained and was tested on",
    "n_train": "training images (cells: N; others: the training split's size)",
    "draw": "cells draw (also the training seed); street under its own budget: the draw of its validation photos; "
            "0 otherwise",
    "epochs": "epochs trained (the budget's crops / (n_train x crops_per_image))",
    "images_seen": "training crops the optimizer stepped on: steps x batch size x crops per image",
    "crop_size": "training crop side, px",
    "crops_per_image": "crops taken from each training image per epoch",
    "threads": "`torch.get_num_threads()` of the run",
    "amp": "the autocast the run trained, validated and tested in: `bf16`, or `off` (float32, what `auto` gives "
           "on a CPU without bf16 instructions)",
    "train_seconds": "time in training steps, summed over epochs (validation excluded; right across resumes)",
    "mae": "test MAE of the checkpoint chosen on validation, as `zoo eval` scores it",
    "mse": "its test MSE: the **root** of the mean squared count error",
    "nae": "its test NAE",
    "f1_4": "its test F1 at 4 px",
    "f1_8": "its test F1 at 8 px",
    "test_views": "test-time views the `*_views` columns average (8: flips and quarter turns); empty: none",
    "mae_views": "test MAE when each test image counts as the mean of its counts in `test_views` views",
    "mse_views": "the same, MSE (root of the mean square)",
    "nae_views": "the same, NAE",
    "init_from": "the checkpoint fine-tuned (`zoo train --init-from`); empty: random weights",
    "checkpoint": "the checkpoint tested",
    "date": "when the row was written, UTC, ISO 8601",
    "bench_status": "the harness's `status` for the model, measured right after its training (random weights: "
                    "speed does not depend on them)",
    "bench_resolution": "the harness's input `HEIGHTxWIDTH`",
    "bench_dtype": "the harness's dtype: the one the suite trained in",
}

TILING = {
    "megapixels": "the image's pixels / 10^6",
    "mode": "`whole` (one forward pass, `--max-pixels 0`) or `tiled`",
    "tile": "tiled: the tile side, px (the default is the one `--max-pixels` gives)",
    "overlap": "tiled: the overlap, px (the default: the model's receptive context)",
    "windows": "forward passes the image took",
    "status": "`ok`; `skipped` (whole image estimated too large: see `estimated_peak_rss_mb`); `oom` (the process "
              "was killed); `error` (see `note`)",
    "note": "why a case was skipped or failed",
    "seconds": "wall time of `predict_images` on the image (reading it included, building the model not)",
    "peak_rss_mb": "peak resident memory of the case's fresh process, MiB",
    "estimated_peak_rss_mb": "large whole-image cases: the peak the line through the smaller cases predicts, MiB",
    "count": "the prediction's count",
    "n_points": "the prediction's number of points",
    "count_rel_diff_vs_whole": "tiled: (count - the whole-image row's) / the whole-image row's, when that ran",
    "f1_vs_whole": "tiled: F1 of one-to-one matching of its points to the whole-image row's within 0.5 px",
}

PUBLISHED_SPEED = {
    "model": "the zoo model compared (`p2pnet`; `csrnet`, the paper's VGG-16 without batch norm)",
    "code": "`published` (the published network's forward pass) or `zoo` (the zoo's, batch norm folded)",
    "rounds": "timed rounds (each runs every variant once, in an order rotated every round)",
    "median_ms": "median over the rounds, ms per image",
    "p10_ms": "10th percentile over the rounds, ms",
    "p90_ms": "90th percentile over the rounds, ms",
    "count": "the count of the last pass (both codes decode with the zoo's decoding)",
    "speedup_vs_published_fp32": "median over rounds of (published fp32 time / this variant's time)",
    "speedup_vs_published_same_setting": "the same against the published code under this row's dtype and layout "
                                         "(torch eager rows only)",
}

PUBLISHED_SPEED_V2 = {
    **PUBLISHED_SPEED,
    "model": "the zoo model timed (`p2pnet`; `csrnet`, the paper's VGG-16 without batch norm; `cpn`, whose published "
             "code has no inference that runs here: zoo rows alone)",
    "run": "when the run started (UTC, `YYYYMMDDTHHMMSSZ`): the rows of one run share it and its ceilings; the README "
           "shows the latest",
    "date": "when the model's timed rounds began, UTC, ISO 8601",
    "cpu_threads": "`torch.get_num_threads()` of the run; onnxruntime and OpenVINO run on as many",
    "openvino": "OpenVINO version, where it is installed",
    "run_load_1m": "1-minute load average when the run started, before its ceilings",
    "run_busy_processes": "the busiest other processes then, `name[pid] cores` over half a second (this process and "
                          "its children left out)",
    "load_1m": "1-minute load average when the model's timed rounds began (its own warm-up included)",
    "busy_processes": "the busiest other processes then, as `run_busy_processes`",
    "loaded": "1 when `load_1m` was above `cpu_threads`: something else competed for the cores; compare such rows "
              "with care",
    "code": "`published` (the published network's forward pass) or `zoo` (the zoo's, batch norm folded)",
    "runtime": "`torch` (eager, or compiled when `compile` is True), `onnxruntime` or `openvino` (the zoo's exported "
               "graph; int8: the one QDQ file both runtimes read)",
    "dtype": "`fp32`; `bf16` (torch: autocast; OpenVINO: its inference precision); `int8` (static quantization)",
    "channels_last": "True when model and input used `torch.channels_last` (torch rows only)",
    "compile": "True when the model ran through `torch.compile` (weights frozen)",
    "status": "`ok`; `not_installed` (the runtime's package is missing: see `note`); `unsupported` (this CPU cannot "
              "run it, e.g. bf16 without bf16 instructions); `compile_failed`, `oom` or `error` (see `note`)",
    "median_ms": "median over the rounds, ms per image (empty unless `status` is ok)",
    "count": "the count of the last pass (every variant decodes with the zoo's decoding)",
    "gflops_per_image": "forward GFLOPs of one image, torch's FLOP counter on the eager fp32 model of the row's code "
                        "(2 per multiply-accumulate; compiled and exported rows run the zoo model's graph)",
    "achieved_gflops_per_s": "`gflops_per_image` / the median time",
    "ceiling_gflops_per_s": "the ceiling of the row's dtype (int8: GOP/s of int8 operations), measured once at the "
                            "start of the run (zoo.bench.ceiling; square products only at 5f018d8 and earlier)",
    "ceiling_instructions": "the instruction set that ceiling's workloads can use here (`amx`, `avx512_bf16`, "
                            "`avx512_vnni`, `avx512`, `avx2`)",
    "ceiling_fraction": "`achieved_gflops_per_s` / `ceiling_gflops_per_s`",
    "speedup_vs_published_fp32": "median over rounds of (published fp32 time / this variant's time); empty without "
                                 "published rows (cpn)",
    "speedup_vs_published_same_setting": "the same against the published code at this row's dtype and layout (torch "
                                         "rows; compiled rows against the published eager pass, from commit fa615c9 "
                                         "on: before, they were left empty)",
    "note": "why a row has no timing, and why a model has no published rows",
}

INT8 = {
    "weights": "the checkpoint checked",
    "data": "the dataset whose test split was scored (and whose training images calibrated); `(val split)` when its "
            "validation split was",
    "images": "images scored",
    "quantization": "the method (`zoo.deploy.quantize`)",
    "calibration_images": "training images the activation ranges were observed on",
    "count_fp32": "total count over the test images, fp32 on torch",
    "count_int8": "the same, int8 on onnxruntime",
    "total_rel_diff": "(`count_int8` - `count_fp32`) / `count_fp32`",
    "mean_image_rel_diff": "mean over images of abs(int8 - fp32) / fp32",
    "max_image_rel_diff": "largest abs(int8 - fp32) / fp32 of an image",
    "mae_fp32": "test MAE in fp32",
    "mae_int8": "test MAE in int8",
    "accepted": "True when int8 stays within 1% of fp32 in total and on the mean image",
}

MUTATION = {
    "date": "day of the run",
    "commit": "the commit mutated",
    "stage": "which state of the tests ran (a label)",
    "module": "the module mutated",
    "scope": "its functions mutated (`all functions`, or the ones named)",
    "test_files": "the test files run against each mutant",
    "mutants": "mutants made: `killed` + `timeout` + `survived` + `no_tests` + `not_checked`",
    "killed": "a test failed",
    "timeout": "the tests ran past mutmut's limit (mutmut's score counts them as caught)",
    "survived": "every test passed: a change the suite does not notice",
    "no_tests": "no selected test calls the function",
    "not_checked": "not run",
    "mutmut": "mutmut version",
}

FAIR_V1 = {
    "schema": "the file's schema and version (`search-v1`, `cells-v1`, `curves-v1`, `test-images-v1`)",
    "row_id": "the row's id, unique in its file (e.g. `fair-v1/final/cpn/d2`); an existing id is never written again",
    "source_row": "the row this one derives from: a final run's search trial, a test image's run",
    "run_row": "the search or cells row of the run this validation pass belongs to",
    "kind": "`test` (a final run's one test) or `baseline`",
    "label": "what the row computes, in words (a baseline says which mean it predicts)",
    "budget": "the protocol version (`fair-v1`, docs/protocol.md)",
    "headline": "1 for the mission's architectures (the headline rows), 0 for a labelled extra row",
    "stage": "`search` or `final`",
    "round": "`crop` (the crop-size round) or `menu` (the improvement trials)",
    "trial": "the trial's name on the menu (docs/protocol.md)",
    "n_train": "training images of the draw",
    "draw": "the draw of training images (seeded; the same images for every family)",
    "steps": "optimizer steps",
    "batch_size": "crops per optimizer step",
    "crop_size": "training crop side, px",
    "images_seen": "training crops seen (steps x batch size)",
    "epochs": "passes over the draw's training images",
    "lr": "learning rate of the whole network",
    "ema_decay": "decay of the weights' moving average per step (0: no average)",
    "bn_recalibration": "training crops per image that recompute batch norm statistics before each validation (0: off)",
    "count_calibration": "1 when the count scale is fitted on validation",
    "head_crops": "share of training crops placed on a head (background crops: 0)",
    "val_mae_best": "the best validation MAE of the run (the kept pass)",
    "val_mae_last": "the validation MAE of the last pass",
    "val_mse_best": "the validation MSE (a root mean square) of the kept pass",
    "best_step": "the optimizer step of the kept pass",
    "val_mae": "validation MAE of a pass, or of the tested checkpoint",
    "val_mse": "validation MSE (a root mean square) of a pass",
    "step": "optimizer step of a validation pass",
    "threshold": "decision threshold chosen on validation",
    "count_scale": "count scale fitted on validation (1: none)",
    "nap_0.05": "nAP at delta 0.05 (P2PNet's normalised localization AP; docs/protocol.md)",
    "nap_0.25": "nAP at delta 0.25",
    "nap_0.5": "nAP at delta 0.5",
    "image": "test image file name",
    "gt_count": "true count of the test image",
    "pred_count": "the run's count of the test image, one view",
    "train_seconds": "training time, s",
    "wall_seconds": "wall-clock of the run (training, validation, test), s",
    "cpu_hours": "wall-clock x threads / 3600",
    "gflops_per_crop": "training GFLOPs of one crop (forward and backward)",
    "train_pflops": "training PFLOPs of the run (or up to a pass)",
    "run": "the run folder",
    "checkpoint": "the tested checkpoint",
    "threads": "torch threads of the run",
    "precision": "autocast the run trained in (`bf16`, `off`)",
    "allow_dirty": "1 when written from uncommitted code with --allow-dirty (left out of every report)",
}

EMPTY = {
    "schema": "the file's schema and version (`empty-v1`)",
    "checkpoint": "the checkpoint measured (a run folder's best.pt)",
    "checkpoint_sha256": "sha256 of that file",
    "data": "the dataset and split rule the checkpoint's training run recorded (its val and test splits are used)",
    "stage": "`before`: no count floor; `after`: the floor chosen on validation",
    "floor": "the count floor in people (zoo.inference.floor): a frame counted below it reports 0; 0: none",
    "floor_reached": "1 when a floor met both conditions on validation (empties under 0.5, MAE within its spread)",
    "split": "the split the row's empty scenes and MAE come from (`test`)",
    "kind": "`background` (head-free windows of the split's photos), `blank`, `texture` or `synthetic` (docs/empty.md)",
    "n_images": "empty scenes of that kind",
    "mean_count": "the model's mean count over them (people)",
    "max_count": "the largest count over them",
    "share_at_least_half": "share of them counted 0.5 or more",
    "val_empty_mean": "mean count over every validation empty scene, at the stage's floor",
    "val_mae": "validation MAE at the stage's floor",
    "val_mae_spread": "standard error of the validation MAE without a floor (std of the absolute errors / sqrt(n))",
    "test_mae": "test MAE at the stage's floor (scored once per stage; it chooses nothing)",
    "threads": "torch threads of the measurement",
    "precision": "autocast the checkpoint ran in (its training run's: `bf16`, `off`)",
}

FRESH_CLONE = {
    "run": "when the timed run started (UTC): the rows of one run share it; the README shows the latest",
    "cpus": "CPU cores the machine has",
    "step": "what a newcomer waits for: `install`, `first training` or `tests`",
    "command": "the command as run in the fresh clone (README.md's first lines; `-q` only quietens its output)",
    "seconds": "wall-clock of the step, s",
    "rc": "exit code of the step",
    "load_before": "1-minute load average when the step started (it still carries the previous step's work; well "
                   "above the cores' count: something else was running)",
    "load_after": "1-minute load average when the step ended",
}

TRAIN_SPEED = {
    "run": "when the run started (UTC, `YYYYMMDDTHHMMSSZ`): the rows of one run share it, and only they are compared",
    "date": "when the model's timed rounds began, UTC, ISO 8601",
    "threads": "`torch.get_num_threads()` of the run (`--threads`)",
    "load_1m": "1-minute load average when the model's timed rounds began (the benchmark's own warm-up included)",
    "loaded": "1 when `load_1m` was above `threads`: something else competed for the cores; compare such rows "
              "with care",
    "busy_processes": "the busiest other processes then, `name[pid] cores` over half a second (this process and its "
                      "children left out)",
    "family": "`points`, `density` or `heatmap`: the published step a row is compared with is its family's",
    "code": "`zoo` (the zoo's model, family loss and recipe optimizer, as the trainer steps) or `published` (the "
            "published network, loss and optimizer, from a checkout outside the repository)",
    "precision": "`fp32`, or `bf16` autocast",
    "channels_last": "1 when model and crops used `torch.channels_last`",
    "compiled": "1 when the model's forward pass ran through `torch.compile` (the loss and optimizer eager)",
    "batch": "crops per training step (`--batch`), the same crops for every row of the model",
    "crop": "crop side, px",
    "data": "the dataset whose loader `data_ms_per_batch` timed (`--data`)",
    "warmup": "untimed steps of each variant before the rounds (at least 1: FLOP count or compile)",
    "iters": "timed rounds; each runs one step of every variant of the model, in an order rotated every round",
    "status": "`ok`; `compile_failed` (the compiled step raised: see `note`); `oom`; `error` (see `note`)",
    "crops_per_s": "`batch` / `step_ms_median`",
    "step_ms_median": "median wall time of one training step (forward, loss, backward, clipping, optimizer), ms",
    "step_ms_p10": "10th percentile of the same, ms",
    "step_ms_p90": "90th percentile of the same, ms",
    "data_ms_per_batch": "zoo rows: median time the trainer's loader (no worker processes) took to produce `batch` "
                         "augmented crops with the family's targets, ms; not part of the step's time",
    "train_gflops_per_crop": "forward and backward GFLOPs of one crop, torch's FLOP counter over one eager step of "
                             "the row's code (2 per multiply-accumulate; the optimizer's updates count none)",
    "achieved_gflops_per_s": "`train_gflops_per_crop` x `crops_per_s`",
    "ceiling_gflops_per_s": "the ceiling at the row's precision (zoo.bench.ceiling; square products only at 5f018d8 "
                            "and earlier), measured at the start of the run",
    "ceiling_fraction": "`achieved_gflops_per_s` / `ceiling_gflops_per_s`",
    "speedup_vs_published_fp32": "`step_ms_median` of the run's published fp32 row of the same model, batch and "
                                 "crop / this row's; empty without that row",
    "speedup_vs_published_same_precision": "the same against the published eager row of this row's precision",
    "note": "why a row failed, why a model has no published rows, and what its published loss leaves out",
}

#: a table of columns per group of CSVs, with the meanings particular to them
COLUMN_MEANINGS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "bench-columns": (("bench.csv",), BENCH),
    "comparison-columns": (COMPARISON_FILES, COMPARISON),
    "tiling-columns": (("tiling.csv",), TILING),
    "published-speed-columns": (("published_speed.csv",), PUBLISHED_SPEED),
    "published-speed-v2-columns": (("published_speed_v2.csv",), PUBLISHED_SPEED_V2),
    "int8-columns": (("int8.csv",), INT8),
    "mutation-columns": (("mutation.csv",), MUTATION),
    "fresh-clone-columns": (("fresh_clone.csv",), FRESH_CLONE),
    "empty-columns": (("empty.csv",), EMPTY),
    "train-speed-columns": (("train_speed.csv",), TRAIN_SPEED),
    "fair-v1-columns": (("search_v1.csv", "cells_v1.csv", "curves_v1.csv", "test_images_v1.csv"), FAIR_V1),
}


def column_table(results: Results, files: tuple[str, ...], meanings: dict[str, str]) -> Table:
    """Every column of `files` once, in the order of their headers; the ones missing from some file say so."""
    table, done = Table(("column", "meaning"), kind="columns"), set()
    files = tuple(f for f in files if f in results.files())  # a file no run has written yet has no header to show
    for file in files:
        for column in results.header(file):
            if column in done:
                continue
            done.add(column)
            meaning = meanings.get(column, SHARED_MEANINGS.get(column))
            if meaning is None:
                raise ZooError(f"results/{file}: column {column!r} has no meaning in benchmarks/documents.py "
                               "(COLUMN_MEANINGS); say what it holds there")
            absent = [f for f in files if column not in results.header(f)]
            only = [f for f in files if f not in absent]
            note = f" ({', '.join(only)} only)" if absent and len(files) > 1 else ""
            table.add(Header(file, column), meaning + note)
    return table


# ------------------------------------------------------------------------------------------------ documents

TABLES: dict[str, Callable[[Results], Table]] = {
    "headline": headline,
    "showcase": showcase,
    "fresh-clone": fresh_clone,
    "speed": speed,
    "comparison": comparison,
    **{name: partial(row_table, file=file, spec=spec) for name, (file, spec) in ROW_TABLES.items()},
    **{name: partial(column_table, files=files, meanings=meanings)
       for name, (files, meanings) in COLUMN_MEANINGS.items()},
}
#: the generated blocks of each document (paths relative to the repository root), in the order they appear
DOCUMENTS: dict[str, tuple[str, ...]] = {
    "README.md": ("fresh-clone", "showcase", "headline", "speed"),
    "docs/results.md": ("comparison", "comparison-columns", "synthetic-cost", "bench", "bench-columns",
                        "published-speed", "published-speed-columns", "published-speed-v2",
                        "published-speed-v2-columns", "tiling", "tiling-columns", "int8",
                        "int8-columns", "mutation", "mutation-columns", "empty", "empty-columns",
                        "fresh-clone-columns", "train-speed", "train-speed-columns", "fair-v1-columns"),
}


def build_tables(results_folder: Path) -> dict[str, Table]:
    """Every block's table, from the CSVs of `results_folder`; each CSV there must have a table of columns."""
    results = Results(results_folder)
    documented = {file for files, _ in COLUMN_MEANINGS.values() for file in files}
    for file in results.files():
        if file not in documented:
            raise ZooError(f"{results.folder / file}: no table of columns documents it; in benchmarks/documents.py "
                           "give its columns' meanings a COLUMN_MEANINGS entry NAME, add NAME to DOCUMENTS and a "
                           "<!-- generated: NAME --> block to docs/results.md")
    return {name: make(results) for name, make in TABLES.items()}


def read_blocks(text: str, where: str) -> dict[str, tuple[int, int]]:
    """Name -> (start, end) of the text between each block's markers."""
    blocks = {}
    for match in START.finditer(text):
        name, end = match[1], text.find(END, match.end())
        if end < 0:
            raise ZooError(f"{where}: the generated block {name!r} has no '{END}' line")
        if START.search(text, match.end(), end):
            raise ZooError(f"{where}: the generated block {name!r} holds another block's start")
        if name in blocks:
            raise ZooError(f"{where}: the generated block {name!r} appears twice")
        blocks[name] = (match.end(), end)
    return blocks


def fill(text: str, tables: dict[str, Table], expected: tuple[str, ...], where: str) -> str:
    """`text` with each of its generated blocks replaced by its table; the blocks must be those `expected`."""
    blocks = read_blocks(text, where)
    if tuple(blocks) != expected:
        raise ZooError(f"{where}: its generated blocks are {', '.join(blocks) or 'none'}; benchmarks/documents.py "
                       f"(DOCUMENTS) expects {', '.join(expected)}, in that order")
    out, position = [], 0
    for name, (start, end) in blocks.items():
        out += [text[position:start], tables[name].render()]
        position = end
    return "".join(out) + text[position:]


def generate(root: Path = ROOT) -> dict[Path, str]:
    """The text every document should have now: its hand-written parts kept, its blocks from `root`/results."""
    tables = build_tables(Path(root) / "results")
    documents = {}
    for name, expected in DOCUMENTS.items():
        path = Path(root) / name
        if not path.is_file():
            raise ZooError(f"{path}: no such document (benchmarks/documents.py DOCUMENTS lists it)")
        documents[path] = fill(path.read_text(), tables, expected, str(path))
    return documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.documents", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (its results/ and documents)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document is out of date")
    args = parser.parse_args(argv)
    try:
        documents = generate(args.root)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = [path for path, text in documents.items() if path.read_text() != text]
    for path in stale:
        if args.check:
            print(f"{path}: out of date; run python -m benchmarks.documents")
        else:
            atomic_write(path, lambda tmp, text=documents[path]: Path(tmp).write_text(text))
            print(f"{path}: regenerated")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
