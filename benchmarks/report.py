"""results/COMPARISON.md and results/comparison.png, generated from the protocol CSVs alone.

Rows are grouped by (budget, device): a CPU-reduced run and a full GPU run are never averaged together. Rows a
group's budget calls for but the CSVs lack are listed as missing, so a partial run says what it did not do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import rows
from benchmarks.budgets import Budget, budget_named
from zoo.core.files import atomic_write
from zoo.data.dataset import resolve_splits
from zoo.models.registry import Recipe


@dataclass(frozen=True)
class Anchor:
    """A published VGG cells result: test MAE after training on N images, under the paper's own split."""

    method: str
    n_train: int
    mae: float
    mae_text: str
    split: str  # how the paper chose its training and test images


SPLIT_101_200 = "N of images 1-100, tested on 101-200, as here"
SHUFFLED = "N drawn from all 200 images shuffled, tested on the rest: not our split"
SPLIT_NOT_CHECKED = "its split not checked here"
ANCHORS = (
    Anchor("Lempitsky & Zisserman 2010", 32, 3.5, "3.5 ± 0.2", SPLIT_101_200),
    Anchor("Count-ception (Cohen et al. 2017)", 32, 2.4, "2.4 ± 0.4", SHUFFLED),
    Anchor("FCRN-A (Xie, Noble & Zisserman 2016)", 64, 2.9, "~2.9", SPLIT_NOT_CHECKED),
    Anchor("Count-ception (Cohen et al. 2017)", 64, 2.3, "2.3", SHUFFLED),
    Anchor("MSCA-UNet", 64, 2.0, "2.0 ± 0.2", SPLIT_NOT_CHECKED),
    Anchor("PGC-Net", 64, 1.9, "1.9 ± 0.1", SPLIT_NOT_CHECKED),
)
PROTOCOL_NOTE = (
    "Our cells protocol: each draw takes N training images from images 1-100 (seeded by the draw), validates on the "
    "rest of 1-100 and tests on images 101-200, which nothing else sees: Lempitsky & Zisserman's split. "
    "Count-ception instead shuffles all 200 images before splitting, so its test images differ from ours; the "
    "published column says which split each anchor used, where we know it.")
COMMANDS = """\
.venv/bin/python -m benchmarks.compare --budget cpu                  # reduced: about 40 minutes on 2 idle cores
.venv/bin/python -m benchmarks.compare --budget cpu-long             # cells only, 8x longer: about 75 minutes
.venv/bin/python -m benchmarks.compare --budget cells                # cells, each family at its best: ~5 hours
.venv/bin/python -m benchmarks.compare --budget cells-long           # P2PNet on cells, twice the crops: ~110 min
.venv/bin/python -m benchmarks.compare --budget cells-ema            # cells-long, weights averaged: ~3 hours
.venv/bin/python -m benchmarks.compare --budget street               # street photos from random weights: ~85 min
.venv/bin/python -m benchmarks.compare --budget full --device cuda   # the issue's full protocol, on a GPU
.venv/bin/python -m benchmarks.compare --report-only                 # this file and the figure, from the CSVs"""
PROTOCOL_TITLES = {"cells": "1. VGG cells (images 101-200, MAE over draws)",
                   "synthetic": "2. Synthetic crowds (held-out synthetic test split)",
                   "street": "3. Real street crowds (8 test images; MAE over draws where there are several)"}
NOT_RUN = "not run"
ACCURACY = ["MAE", "MSE", "NAE", "F1@4", "F1@8"]
TEXT_COLUMNS = ("protocol", "model", "budget", "device", "family", "init_from", "checkpoint", "date", "git_commit")


def load(results: Path) -> dict[str, pd.DataFrame]:
    """Every protocol's rows (an empty frame of the right columns where its CSV is absent)."""
    frames = {}
    for protocol in rows.FILES:
        path = rows.csv_path(results, protocol)
        # Text columns stay text: a commit like 9098932 would otherwise read as a number.
        frames[protocol] = (pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}) if path.is_file()
                            else pd.DataFrame(columns=rows.columns(protocol)))
    return frames


def groups(frames: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    found = {(b, d) for frame in frames.values() for b, d in zip(frame["budget"], frame["device"], strict=True)}
    return sorted(found)


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or pd.isna(value):
        return "—"
    return f"{value:.{digits}f}"


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def views_label(frame: pd.DataFrame) -> str | None:
    """The test-time views `frame`'s rows also scored the mean count of, as text ("8"); None when none did."""
    views = sorted({int(v) for v in frame["test_views"].dropna()})
    return "/".join(map(str, views)) if views else None


def cells_table(frame: pd.DataFrame, budget: Budget | None) -> str:
    views = views_label(frame)
    header = ["model", "family", "N", "draws", "MAE mean ± std", *([f"MAE, {views} views"] if views else []), "MSE",
              "F1@4", "F1@8", "epochs", "crops seen"]
    sizes = sorted(set(frame["n_train"]) | set(budget.cells_sizes if budget else ()))
    body = []
    for n in sizes:
        at_n = frame[frame["n_train"] == n]
        for model in dict.fromkeys([*(budget.models_at(n) if budget else ()), *at_n["model"]]):
            runs = at_n[at_n["model"] == model]
            expected = f"/{budget.cells_draws}" if budget else ""
            if runs.empty:
                body.append([model, "", str(n), f"0{expected}", NOT_RUN] + [""] * (len(header) - 5))
                continue
            body.append([model, runs["family"].iloc[0], str(n), f"{len(runs)}{expected}", mean_std(runs["mae"]),
                         *([mean_std(runs["mae_views"])] if views else []), fmt(runs["mse"].mean()),
                         fmt(runs["f1_4"].mean(), 3), fmt(runs["f1_8"].mean(), 3), str(int(runs["epochs"].iloc[0])),
                         str(int(runs["images_seen"].iloc[0]))])
        body += [[f"*{a.method}* (published; {a.split})", "", str(n), "", a.mae_text] + [""] * (len(header) - 5)
                 for a in ANCHORS if a.n_train == n]
    table = markdown_table(header, body)
    if views:
        table += (f"\n\nMAE, {views} views: each test image counted as the mean of its counts in {views} flipped and "
                  "turned copies (`zoo eval --views`, the draws that scored it); points and F1 are those of the "
                  "image as given.")
    return table


def accuracy_cells(r: pd.Series) -> list[str]:
    return [fmt(r["mae"]), fmt(r["mse"]), fmt(r["nae"], 3), fmt(r["f1_4"], 3), fmt(r["f1_8"], 3)]


def latest_run_table(frame: pd.DataFrame, budget: Budget | None, header: list[str], cells) -> str:
    """One line per model: model, family, then `cells(row)` of its latest run, or "not run"."""
    body = []
    for model in models_in(frame, budget):
        run = frame[frame["model"] == model]
        if run.empty:
            body.append([model, "", NOT_RUN] + [""] * (len(header) - 3))
        else:
            body.append([model, run["family"].iloc[-1], *cells(run.iloc[-1])])
    return markdown_table(header, body)


def synthetic_table(frame: pd.DataFrame, budget: Budget | None) -> str:
    header = ["model", "family", *ACCURACY, "crops seen", "epochs", "train s", "params M", "GFLOPs/img", "img/s",
              "latency ms", "peak MB", "train img/s"]

    def cells(r: pd.Series) -> list[str]:
        memory = r["peak_rss_mb"] if pd.notna(r["peak_rss_mb"]) else r["cuda_peak_allocated_mb"]
        return [*accuracy_cells(r), str(int(r["images_seen"])), str(int(r["epochs"])), fmt(r["train_seconds"], 0),
                fmt(r["params_total"] / 1e6, 1), fmt(r["gflops_per_image"], 1), fmt(r["images_per_s"], 2),
                fmt(r["latency_ms_median"], 0), fmt(memory, 0), fmt(r["train_images_per_s"], 1)]

    table = latest_run_table(frame, budget, header, cells)
    speed = frame.dropna(subset=["bench_resolution"])
    if not speed.empty:
        table += (f"\n\nSpeed and memory: `zoo bench` at {speed['bench_resolution'].iloc[0]}, "
                  f"{speed['bench_dtype'].iloc[0]}, batch 1 (img/s, latency, peak memory: resident set on CPU, "
                  "allocated on CUDA); train img/s at each recipe's crop and batch. There are no published "
                  "anchors for this generated data.")
    return table


def street_table(frame: pd.DataFrame, budget: Budget | None) -> str:
    """One line per model: the mean ± std over its draws (a budget fine-tuning synthetic checkpoints has one)."""
    header = ["model", "family", "draws", "MAE mean ± std", "MSE", "NAE", "F1@4", "F1@8", "crops seen", "epochs",
              "start"]
    body = []
    for model in models_in(frame, budget):
        runs = frame[frame["model"] == model]
        expected = f"/{budget.street_draws}" if budget else ""
        if runs.empty:
            body.append([model, "", f"0{expected}", NOT_RUN] + [""] * (len(header) - 4))
            continue
        start = ", ".join(f"`{c}`" for c in runs["init_from"].dropna()) or "random weights"
        body.append([model, runs["family"].iloc[0], f"{len(runs)}{expected}", mean_std(runs["mae"]),
                     fmt(runs["mse"].mean()), fmt(runs["nae"].mean(), 3), fmt(runs["f1_4"].mean(), 3),
                     fmt(runs["f1_8"].mean(), 3), str(int(runs["images_seen"].iloc[0])),
                     str(int(runs["epochs"].iloc[0])), start])
    return markdown_table(header, body) + (
        "\n\nThis set uses ShanghaiTech Part B's layout but holds other scenes, so published Part B results do "
        "not apply to it.")


def models_in(frame: pd.DataFrame, budget: Budget | None) -> list[str]:
    return list(dict.fromkeys([*(budget.models if budget else ()), *frame["model"]]))


def missing_rows(frames: dict[str, pd.DataFrame], budget: Budget) -> list[str]:
    have = {(p, m, int(n), int(d)) for p, f in frames.items()
            for m, n, d in zip(f["model"], f["n_train"], f["draw"], strict=True)}
    have_any_n = {(p, m, d) for p, m, _, d in have}
    missing = [f"cells {m} N={n} draw {d}" for n in budget.cells_sizes for d in range(budget.cells_draws)
               for m in budget.models_at(n) if "cells" in budget.protocols and ("cells", m, n, d) not in have]
    missing += [f"synthetic {m}" for m in budget.models
                if "synthetic" in budget.protocols and ("synthetic", m, 0) not in have_any_n]
    missing += [f"street {m}" + (f" draw {d}" if budget.street_draws > 1 else "")
                for d in range(budget.street_draws) for m in budget.models
                if "street" in budget.protocols and ("street", m, d) not in have_any_n]
    return missing


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def budget_text(budget: Budget) -> str:
    crops = f"crops of {Recipe().crop_size} px"
    if "street" in budget.protocols:
        crops += f", {budget.street_crop_size} px on the 768x1024 street photos"
    chosen = {model: {**budget.model_recipes.get(model, {}), **budget.model_kwargs.get(model, {})}
              for model in budget.models}
    choices = "; ".join(f"{model} " + ", ".join(f"{k}={v}" for k, v in c.items()) for model, c in chosen.items() if c)
    choices = f", except what this budget chose on validation ({choices})" if choices else ""
    only = "".join(f" (N = {n}: {', '.join(budget.models_at(n))} only)" for n in budget.cells_models)
    larger = (" (a model given larger crops sees as many pixels: fewer crops)"
              if any("crop_size" in c for c in budget.model_recipes.values()) else "")
    views = "".join(f"; the final {protocol} test also counts each image as the mean of {plural(v, 'view')}"
                    for protocol, v in budget.test_views.items() if protocol in budget.protocols and v > 1)
    cells = (f"cells N = {', '.join(map(str, budget.cells_sizes))}{only} with {plural(budget.cells_draws, 'draw')} "
             "each; " if "cells" in budget.protocols else "")
    street = (f"street photos: {plural(budget.street_draws, 'draw')} from random weights; "
              if "street" in budget.protocols and not budget.street_from_synthetic else "")
    return (f"Models {', '.join(budget.models)}; {cells}{street}{plural(budget.crops_per_image, 'crop')} per image per "
            f"epoch; training crops per run: {', '.join(f'{p} {budget.crops(p)}' for p in budget.protocols)}{larger}; "
            f"{plural(budget.validations, 'validation pass', 'validation passes')} per run{views}. Same augmentation "
            f"for every model (the default recipe's scale, flip and jitter; {crops}); the rest is each model's "
            f"registry recipe{choices}. All models start from random weights (no pretrained weights exist here). "
            + budget.note).strip()


def cells_verdict(frame: pd.DataFrame) -> str:
    """One line per N: the best model's mean MAE against the published anchors at that N; a second one for the
    mean count of test-time views, where draws scored it."""
    lines = []
    for n, runs in frame.groupby("n_train"):
        lines.append(verdict_line(f"N = {n}", n, runs, "mae"))
        viewed = runs.dropna(subset=["mae_views"])
        if not viewed.empty:
            lines.append(verdict_line(f"N = {n}, mean count of {views_label(viewed)} views", n, viewed, "mae_views"))
    if frame["mae_views"].notna().any():
        lines.append("\nThe first line of each N counts every test image once, as given; the views line adds a "
                     "test-time choice of ours that this report does not know the published figures to make.")
    return "\n".join(lines)


def verdict_line(label: str, n: int, runs: pd.DataFrame, column: str) -> str:
    means = runs.groupby("model")[column].mean()
    best = means.idxmin()
    against = "; ".join(f"{a.method} {a.mae_text}: {'beaten' if means[best] < a.mae else 'not reached'}"
                        for a in ANCHORS if a.n_train == n)
    return (f"- {label}: best is {best} at {means[best]:.2f} MAE (mean of "
            f"{plural(int((runs['model'] == best).sum()), 'draw')}){'; ' + against if against else ''}.")


@dataclass(frozen=True)
class Baseline:
    """What a model must beat to count at all on a protocol's test split."""

    constant_mae: float  # always predicting the mean count of the training and validation images
    zero_mae: float  # predicting nobody: the mean test count

    def text(self) -> str:
        return (f"Reference without a model: always predicting the training images' mean count gives test MAE "
                f"{self.constant_mae:.2f}; finding no one gives MAE {self.zero_mae:.2f} (and F1 0).")


def count_baseline(spec: str) -> Baseline:
    """The constant-count baselines of a dataset (`resolve_splits` spec), from its annotations alone."""
    splits = resolve_splits(spec)
    pool = np.array([len(r.points) for r in splits.train + splits.val], dtype=float)
    test = np.array([len(r.points) for r in splits.test], dtype=float)
    return Baseline(float(np.abs(test - pool.mean()).mean()), float(test.mean()))


def render(frames: dict[str, pd.DataFrame], extra_budgets: dict[str, Budget] | None = None,
           figure: str | None = None, baselines: dict[str, Baseline] | None = None) -> str:
    parts = ["# Comparison: points (P2PNet), density (CSRNet), heatmaps (CPN)", "",
             "Generated by `benchmarks/compare.py` from `results/cells.csv`, `results/synthetic.csv` and "
             "`results/street.csv` (columns in `docs/results.md`); do not edit by hand.", "",
             "## Reproduce", "", "```", COMMANDS, "```", ""]
    if not groups(frames):
        parts += ["No comparison rows yet.", ""]
    for budget_name, device in groups(frames):
        budget = budget_named(budget_name, extra_budgets)
        chosen = {p: f[(f["budget"] == budget_name) & (f["device"] == device)] for p, f in frames.items()}
        commits = sorted({c for f in chosen.values() for c in f["git_commit"].dropna()})
        threads = sorted({str(int(t)) for f in chosen.values() for t in f["threads"].dropna()})
        precisions = sorted({str(a) for f in chosen.values() for a in f["amp"].dropna()})
        parts += [f"## Budget `{budget_name}` on `{device}`", "",
                  budget_text(budget) if budget else "(a budget this version of the suite does not define)", "",
                  f"Code: {', '.join(commits)}; torch threads: {', '.join(threads) or 'not recorded'}; autocast "
                  f"(`--amp`): {', '.join(precisions) or 'not recorded'}.", ""]
        for protocol, table in (("cells", cells_table), ("synthetic", synthetic_table), ("street", street_table)):
            if budget and protocol not in budget.protocols and chosen[protocol].empty:
                continue
            parts += [f"### {PROTOCOL_TITLES[protocol]}", "", table(chosen[protocol], budget), ""]
            if protocol in (baselines or {}):
                parts += [baselines[protocol].text(), ""]
        if not chosen["cells"].empty:
            parts += ["### Against the published cells results", "", cells_verdict(chosen["cells"]), "",
                      PROTOCOL_NOTE, ""]
        missing = missing_rows(chosen, budget) if budget else []
        parts += ["### Missing rows", "", ("Not run (yet): " + ", ".join(missing) + ".") if missing
                  else "None: every run this budget calls for is in the CSVs.", ""]
    if figure:
        parts += ["## Accuracy vs throughput", "", f"![accuracy vs throughput]({figure})", "",
                  "x: images/s of `zoo bench` at the benchmark resolution (batch 1); y: test MAE of each protocol "
                  "(cells: mean over draws at the largest N, bars one standard deviation); dashed lines: the "
                  "constant-count baseline and, for cells, the published anchors at that N. One row of panels per "
                  "budget and device.", ""]
    return "\n".join(parts)


def plot(frames: dict[str, pd.DataFrame], path: Path, baselines: dict[str, Baseline] | None = None) -> Path | None:
    """Accuracy against inference throughput per protocol, with the published anchors and the constant-count
    baseline as horizontal lines; None when no synthetic row has a speed. A budget without synthetic runs (so
    without speeds of its own) borrows the speeds measured on the same device: speed does not depend on training."""
    speed_rows = frames["synthetic"].dropna(subset=["images_per_s"])
    measured_on = set(speed_rows["device"])
    keys = [key for key in groups(frames) if key[1] in measured_on]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10")
    colours = {model: palette(i % 10) for i, model in enumerate(sorted(set(speed_rows["model"])))}
    fig, axes = plt.subplots(len(keys), 3, figsize=(13, 4 * len(keys)), squeeze=False)
    for row_axes, (budget_name, device) in zip(axes, keys, strict=True):
        chosen = {p: f[(f["budget"] == budget_name) & (f["device"] == device)] for p, f in frames.items()}
        own = speed_rows[(speed_rows["budget"] == budget_name) & (speed_rows["device"] == device)]
        speed = (own if not own.empty else speed_rows[speed_rows["device"] == device]).groupby("model")[
            "images_per_s"].last()
        for ax, protocol in zip(row_axes, ("synthetic", "cells", "street"), strict=True):
            frame = chosen[protocol]
            if frame.empty:
                ax.set_axis_off()
                continue
            title = f"{protocol} ({budget_name}, {device})"
            if protocol in (baselines or {}):
                constant = baselines[protocol].constant_mae
                ax.axhline(constant, ls="--", lw=0.8, color="grey")
                ax.annotate("constant count", (1, constant), xycoords=("axes fraction", "data"), ha="right",
                            va="bottom", fontsize=7, color="dimgrey")
            if protocol == "cells":
                n = frame["n_train"].max()
                frame = frame[frame["n_train"] == n]
                title = f"cells N = {n} ({budget_name}, {device})"
                # Published anchors lie within 1-2 MAE of each other: named in a legend, not beside their lines.
                anchors = [a for a in ANCHORS if a.n_train == n]
                for a, shade in zip(anchors, np.linspace(0.2, 0.7, len(anchors)), strict=True):
                    ax.axhline(a.mae, ls=":", lw=1.0, color=str(shade), label=f"{a.method} {a.mae_text}")
                if anchors:
                    ax.legend(fontsize=6, loc="center right", title="published", title_fontsize=6)
            stats = frame.groupby("model")["mae"].agg(["mean", "std"])
            for model, (mean, std) in stats.iterrows():
                if model in speed.index:
                    ax.errorbar(speed[model], mean, yerr=0 if pd.isna(std) else std, fmt="o", capsize=3,
                                color=colours[model])
                    ax.annotate(model, (speed[model], mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(f"images/s ({speed_rows['bench_resolution'].iloc[0]}, batch 1)")
            ax.set_ylabel("test MAE")
            ax.margins(x=0.2)  # room for the model names beside the outermost points
            ax.set_ylim(0, 1.15 * ax.get_ylim()[1])  # and for the labels above the highest one
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_report(results: Path, extra_budgets: dict[str, Budget] | None = None,
                 datasets: dict[str, str] | None = None) -> Path:
    """Write COMPARISON.md (and comparison.png when speeds exist) into `results`; returns the markdown path.
    `datasets` maps protocols to the data whose constant-count baselines the tables quote (absent ones skipped)."""
    results = Path(results)
    frames = load(results)
    baselines = {protocol: count_baseline(spec) for protocol, spec in (datasets or {}).items()}
    figure = plot(frames, results / "comparison.png", baselines)
    target = results / "COMPARISON.md"
    text = render(frames, extra_budgets, figure.name if figure else None, baselines)
    atomic_write(target, lambda tmp: Path(tmp).write_text(text))
    return target
