"""docs/comparison.md and docs/comparison.png: the fair protocol's page (docs/protocol.md), generated from the
results/*_v1.csv files alone. Deterministic (the bootstrap is seeded), so a test compares the committed page with
what this module writes from the committed CSVs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import rows
from benchmarks.budgets import FairBudget
from benchmarks.fair import chosen_crop, chosen_trial, final_id, is_dirty, search_needs
from zoo.core.files import atomic_write
from zoo.metrics.localization import DELTAS, nap_key

ROOT = Path(__file__).resolve().parents[1]
PAGE = "comparison.md"
FIGURE = "comparison.png"
RESAMPLES = 10_000
SEED = 0
TEXT = ("row_id", "source_row", "run_row", "kind", "label", "budget", "model", "family", "trial", "round", "image",
        "git_commit", "device", "device_name", "torch", "threads", "precision", "date", "checkpoint", "run",
        "count_calibration", "stage")
COMMANDS = """\
.venv/bin/python -m benchmarks.compare --budget fair-v1 --stage search     # crop round, then 4 trials a family
.venv/bin/python -m benchmarks.compare --budget fair-v1 --stage final      # 3 draws; --draws 5 where time allows
.venv/bin/python -m benchmarks.compare --budget fair-v1 --report-only      # this page and its figure"""


@dataclass(frozen=True)
class Anchor:
    """A published VGG cells result at N training images, with its spread where one is known to us."""

    method: str
    n_train: int
    mae: float
    spread: float | None
    status: str  # where the figure and its spread come from, and the paper's split

    @property
    def text(self) -> str:
        return f"{self.mae:g} ± {self.spread:g}" if self.spread is not None else f"{self.mae:g}"


UNCHECKED = "spread as issue 33 quotes it, not checked against the paper"
ANCHORS = (
    Anchor("Count-ception (Cohen et al. 2017)", 64, 2.3, 0.4,
           f"{UNCHECKED}; its split shuffles all 200 images (not 101-200)"),
    Anchor("FCRN-A (Xie, Noble & Zisserman 2016)", 64, 2.9, 0.2, f"{UNCHECKED}; split not checked"),
    Anchor("PGC-Net", 64, 1.9, 0.1, f"{UNCHECKED}; split not checked"),
)


@dataclass(frozen=True)
class Goal:
    """A goal of issue 33: `who` ("best": the headline family of lowest mean MAE, or family names) must reach
    `need` ("beats", or "at least level") against ANCHORS[`anchor`]."""

    text: str
    anchor: int
    who: tuple[str, ...]
    need: str


GOALS = (Goal("the best family beats Count-ception (2.3) with one view", 0, ("best",), "beats"),
         Goal("density and heatmaps at least as good as FCRN-A (2.9)", 1, ("density", "heatmap"), "at least level"))


def verdict(lo: float, hi: float, anchor: Anchor) -> str:
    """docs/protocol.md's one rule: beats when the interval's top is below the anchor minus its spread, falls
    short when its bottom is above the anchor plus its spread, level otherwise (a spread not known counts as 0)."""
    spread = anchor.spread or 0.0
    if hi < anchor.mae - spread:
        return "beats"
    if lo > anchor.mae + spread:
        return "falls short of"
    return "level with"


def meets(outcome: str, need: str) -> bool:
    return outcome == "beats" or (need == "at least level" and outcome == "level with")


# ---- statistics ---------------------------------------------------------------------------------------------------

def resample_weights(draws: int, images: int, resamples: int = RESAMPLES, seed: int = SEED):
    """How often each draw and each test image is picked in each resample (the same for every family: paired)."""
    rng = np.random.default_rng(seed)
    return (rng.multinomial(draws, np.full(draws, 1 / draws), size=resamples),
            rng.multinomial(images, np.full(images, 1 / images), size=resamples))


def bootstrap_interval(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (draws x test images), resampling draws and images with
    replacement, independently. A difference of two families' errors gives the paired interval."""
    values = np.asarray(values, dtype=float)
    by_draw, by_image = resample_weights(*values.shape, resamples, seed)
    means = np.einsum("bd,di,bi->b", by_draw, values, by_image) / values.size
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def errors(images: pd.DataFrame, model: str, draws: list[int]) -> np.ndarray:
    """|count error| of `model` per draw (rows) and test image (columns, by name)."""
    mine = images[images["model"] == model]
    table = mine.assign(error=(mine["pred_count"] - mine["gt_count"]).abs()).pivot(
        index="draw", columns="image", values="error")
    return table.loc[draws].sort_index(axis=1).to_numpy()


# ---- loading ------------------------------------------------------------------------------------------------------

def load(results: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for kind, (_, _, columns) in rows.V1_FILES.items():
        path = rows.v1_path(results, kind)
        frames[kind] = (pd.read_csv(path, dtype={c: str for c in TEXT}, keep_default_na=True) if path.is_file()
                        else pd.DataFrame(columns=columns))
    return frames


def split_kept(frame: pd.DataFrame, budget: FairBudget) -> tuple[pd.DataFrame, list[str]]:
    """The rows the page may use, and a line for each one it leaves out: uncommitted code, another precision."""
    reasons = []
    keep = []
    for _, row in frame.iterrows():
        commit = str(row.get("git_commit", ""))
        if pd.to_numeric(row.get("allow_dirty"), errors="coerce") == 1 or any(is_dirty(c) for c in commit.split("/")):
            reasons.append(f"`{row['row_id']}`: trained at {commit} (uncommitted code)")
        elif str(row.get("precision")) != budget.amp:
            reasons.append(f"`{row['row_id']}`: precision {row.get('precision')}, not the budget's {budget.amp}")
        else:
            keep.append(True)
            continue
        keep.append(False)
    return frame[np.array(keep, dtype=bool)] if len(frame) else frame, reasons


# ---- formatting ---------------------------------------------------------------------------------------------------

def fmt(value, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if not np.isfinite(value) else f"{value:.{digits}f}"


def mean_std(values: pd.Series, digits: int = 2) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return fmt(values.iloc[0], digits)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def table(header: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(line) + " |" for line in body)])


def name_of(model: str, family: str, budget: FairBudget) -> str:
    return f"`{model}` ({family}{', extra row' if model in budget.extras else ''})"


# ---- sections -----------------------------------------------------------------------------------------------------

def search_section(search: pd.DataFrame, budget: FairBudget) -> list[str]:
    parts = ["## Search (validation images of draw 0 only)", ""]
    if search.empty:
        return parts + ["No search trials yet: the search stage has not run.", ""]
    log = search.to_dict("records")
    crop = chosen_crop(budget, log)
    body = []
    for model in dict.fromkeys([*budget.models, *search["model"]]):
        mine = search[search["model"] == model]
        if mine.empty:
            continue
        choice = chosen_trial(budget, log, model, crop) if crop else None
        for _, r in mine.iterrows():
            chosen = "**chosen**" if choice and choice[1]["row_id"] == r["row_id"] else ""
            body.append([name_of(model, r["family"], budget), r["round"], f"`{r['trial']}`", str(int(r["crop_size"])),
                         f"{float(r['lr']):.0e}", "on" if float(r["ema_decay"]) else "off", fmt(r["val_mae_best"]),
                         str(int(r["best_step"])), fmt(r["val_mae_last"]), str(int(r["steps"])),
                         trial_cpu_hours(r), chosen])
    header = ["model", "round", "trial", "crop px", "lr", "EMA", "best val MAE", "at step", "last val MAE", "steps",
              "CPU-hours", ""]
    decided = (f"Crop size: **{crop} px** for every family (the crop round, docs/protocol.md)." if crop else
               "Crop size: not decided yet (the crop round is incomplete).")
    return parts + [table(header, body), "", SEARCH_COST, "", decided, ""]


SEARCH_COST = ("CPU-hours: the trial's wall-clock (every attempt: training and validations) x torch threads. "
               "\"≥\" marks a trial whose recorded wall-clock is below its training seconds (attempts killed before "
               "commit 7a9ad6f recorded none, docs/protocol.md): its training seconds x threads is the bound shown.")


def trial_cpu_hours(row) -> str:
    wall, train, threads = (pd.to_numeric(row.get(k), errors="coerce") for k in ("wall_seconds", "train_seconds",
                                                                               "threads"))
    if wall < train:  # False where either is missing
        return f"≥ {fmt(train * threads / 3600)}"
    return fmt(row.get("cpu_hours"))


def test_section(cells: pd.DataFrame, images: pd.DataFrame, budget: FairBudget) -> tuple[list[str], dict]:
    """The headline and extra tables, the baselines, the paired differences and the cost; returns the lines and
    each model's (mean MAE, interval, draws, family) for the verdicts."""
    parts = ["## Test (images 101-200, one view)", ""]
    runs = cells[cells["kind"] == "test"]
    if runs.empty:
        return parts + ["No final runs yet: the final stage has not run.", ""], {}
    stats = {}
    header = ["model", "trial", "draws", "MAE mean ± std", "MAE 95% interval", "MSE mean ± std", "NAE",
              *(f"nAP δ={d:g}" for d in DELTAS), "F1@4", "F1@8"]
    sections = {"Headline rows": [], "Extra rows (labelled; not in the verdicts)": []}
    for model in dict.fromkeys([*budget.models, *runs["model"]]):
        mine = runs[runs["model"] == model].sort_values("draw")
        if mine.empty:
            continue
        draws = [int(d) for d in mine["draw"]]
        interval = bootstrap_interval(errors(images, model, draws))
        family = mine["family"].iloc[0]
        stats[model] = (float(pd.to_numeric(mine["mae"]).mean()), interval, draws, family)
        line = [name_of(model, family, budget), ", ".join(f"`{t}`" for t in dict.fromkeys(mine["trial"])),
                f"{len(mine)}/{budget.draws}", mean_std(mine["mae"]), f"[{interval[0]:.2f}, {interval[1]:.2f}]",
                mean_std(mine["mse"]), mean_std(mine["nae"], 3),
                *(mean_std(mine[nap_key(d)], 3) for d in DELTAS), mean_std(mine["f1_4"], 3),
                mean_std(mine["f1_8"], 3)]
        sections["Headline rows" if model in budget.headline else "Extra rows (labelled; not in the verdicts)"].append(
            line)
    for title, body in sections.items():
        if body:
            parts += [f"### {title}", "", table(header, body), ""]
    parts += ["MSE is the root of the mean squared count error (the literature's name). Intervals: 95% percentile "
              f"bootstrap over draws and test images ({RESAMPLES:,} resamples, seed {SEED}). nAP: candidates at "
              "threshold 0 ranked by score, matched within δ x the mean distance to a true point's 3 nearest "
              "neighbours; F1 at the checkpoint's own threshold, within 4 or 8 px.", ""]
    parts += baseline_lines(cells) + paired_lines(stats, images, budget) + cost_lines(runs, budget)
    return parts, stats


def baseline_lines(cells: pd.DataFrame) -> list[str]:
    baselines = cells[cells["kind"] == "baseline"]
    if baselines.empty:
        return []
    body = [[label, str(len(group)), mean_std(group["mae"]), mean_std(group["mse"])]
            for label, group in baselines.groupby("label", sort=False)]
    return ["### Baselines (no model)", "", table(["what it predicts", "draws", "MAE mean ± std", "MSE mean ± std"],
                                                   body), ""]


def paired_lines(stats: dict, images: pd.DataFrame, budget: FairBudget) -> list[str]:
    models = [m for m in budget.models if m in stats]
    body = []
    for k, a in enumerate(models):
        for b in models[k + 1:]:
            draws = sorted(set(stats[a][2]) & set(stats[b][2]))
            if not draws:
                continue
            difference = errors(images, a, draws) - errors(images, b, draws)
            lo, hi = bootstrap_interval(difference)
            body.append([f"`{a}` - `{b}`", str(len(draws)), fmt(difference.mean()), f"[{lo:.2f}, {hi:.2f}]"])
    if not body:
        return []
    return ["### Paired differences", "", table(["A - B (absolute count error)", "shared draws", "mean",
                                                 "95% interval"], body), "",
            "Below 0: A's counts are closer. The interval pairs the two families on the same draws and images.", ""]


def cost_lines(runs: pd.DataFrame, budget: FairBudget) -> list[str]:
    body = []
    for model in dict.fromkeys([*budget.models, *runs["model"]]):
        mine = runs[runs["model"] == model]
        if mine.empty:
            continue
        numbers = mine[["steps", "images_seen", "crop_size", "wall_seconds", "train_seconds", "cpu_hours",
                        "train_pflops"]].apply(pd.to_numeric)
        body.append([f"`{model}`", "/".join(str(int(v)) for v in numbers["steps"].unique()),
                     "/".join(str(int(v)) for v in numbers["images_seen"].unique()),
                     "/".join(str(int(v)) for v in numbers["crop_size"].unique()),
                     ", ".join(dict.fromkeys(mine["precision"])), fmt(numbers["wall_seconds"].mean() / 60, 1),
                     fmt(numbers["train_seconds"].mean() / 60, 1), fmt(numbers["cpu_hours"].sum(), 2),
                     fmt(numbers["train_pflops"].mean(), 1), ", ".join(dict.fromkeys(mine["device_name"])),
                     ", ".join(dict.fromkeys(mine["threads"]))])
    header = ["model", "steps", "crops seen", "crop px", "precision", "wall-clock min/draw", "training min/draw",
              "CPU-hours, all draws", "training PFLOPs/draw", "CPU", "threads"]
    return ["### Cost", "", table(header, body), "",
            "Wall-clock: every attempt of the job (training, validations, test, nAP); CPU-hours: wall-clock x threads; "
            "training FLOPs: 3 x one crop's forward FLOPs x crops seen.", ""]


def verdict_lines(stats: dict, budget: FairBudget) -> list[str]:
    parts = ["## Against the published anchors", "",
             "Rule (docs/protocol.md): a family **beats** an anchor a ± s when the top of its 95% interval is below "
             "a - s, **falls short of** it when the bottom is above a + s, and is **level with** it otherwise.", ""]
    body = [[a.method, str(a.n_train), a.text, a.status] for a in ANCHORS]
    parts += [table(["anchor", "N", "test MAE", "source of the figure"], body), ""]
    complete = {m: s for m, s in stats.items() if m in budget.headline and len(s[2]) >= budget.draws}
    if not complete:
        return parts + [f"Verdicts wait for {budget.draws} draws of a headline family.", ""]
    outcomes = {m: [verdict(*s[1], a) for a in ANCHORS] for m, s in complete.items()}
    for model, (mean, (lo, hi), draws, family) in complete.items():
        standing = "; ".join(f"{o} {a.method.split(' (')[0]} ({a.text})"
                             for o, a in zip(outcomes[model], ANCHORS, strict=True))
        parts.append(f"- `{model}` ({family}): mean {mean:.2f}, 95% interval [{lo:.2f}, {hi:.2f}] over "
                     f"{len(draws)} draw{'' if len(draws) == 1 else 's'}: {standing}.")
    parts += ["", "### Goals of issue 33", ""]
    pending = [m for m in budget.headline if m not in complete]
    for goal in GOALS:
        if goal.who == ("best",):
            who = [min(complete, key=lambda m: complete[m][0])]
        else:
            who = [m for m in complete if complete[m][3] in goal.who]
        met = all(meets(outcomes[m][goal.anchor], goal.need) for m in who) if who else False
        named = ", ".join(f"`{m}` {outcomes[m][goal.anchor]} it" for m in who) or "no family of that kind yet"
        parts.append(f"- {goal.text}: **{'met' if met else 'missed'}** ({named})"
                     + (f"; pending: {', '.join(pending)}" if pending else "") + ".")
    return parts + [""]


def missing_lines(search: pd.DataFrame, cells: pd.DataFrame, budget: FairBudget, excluded: list[str]) -> list[str]:
    have = set(cells["row_id"]) if not cells.empty else set()
    lacking = [final_id(budget, m, d) for d in range(budget.draws) for m in budget.headline
               if final_id(budget, m, d) not in have]
    trials = search_needs(budget, search.astype(str).to_dict("records"))
    parts = ["## Rows left out and rows missing", ""]
    parts += [f"Left out of every table: {'; '.join(excluded)}." if excluded else "No row is left out."]
    if trials:
        parts += ["", "Search trials the final stage still waits for (headline families): "
                  + ", ".join(f"`{r}`" for r in trials) + "."]
    parts += ["", f"Not run yet ({budget.draws} draws of the headline families): "
              + ", ".join(f"`{r}`" for r in lacking) + "." if lacking
              else f"Every headline family has its {budget.draws} draws.", ""]
    return parts


def kept_runs(frames: dict[str, pd.DataFrame], budget: FairBudget) -> tuple[pd.DataFrame, list[str]]:
    tests = frames["cells"]
    return split_kept(tests[tests["kind"] == "test"], budget)


def final_curves(frames: dict[str, pd.DataFrame], budget: FairBudget) -> pd.DataFrame:
    """The validation passes of the final runs the page uses: what the figure draws."""
    curves = frames["curves"]
    return curves[(curves["stage"] == "final") & curves["run_row"].isin(set(kept_runs(frames, budget)[0]["row_id"]))]


def render(frames: dict[str, pd.DataFrame], budget: FairBudget) -> str:
    """The page, from the frames alone (the figure is referenced where final runs have validation curves)."""
    search, excluded_search = split_kept(frames["search"], budget)
    tests = frames["cells"]
    runs, excluded_runs = kept_runs(frames, budget)
    cells = pd.concat([runs, tests[tests["kind"] != "test"]]) if not tests.empty else tests
    images = frames["images"][frames["images"]["source_row"].isin(set(runs["row_id"]))]
    parts = [f"# Fair comparison on VGG cells (`{budget.name}`)", "",
             "Generated from `results/search_v1.csv`, `results/cells_v1.csv`, `results/curves_v1.csv` and "
             "`results/test_images_v1.csv` by `benchmarks/fair_report.py`; do not edit by hand. The protocol, fixed "
             "before the first run, is [protocol.md](protocol.md).", "", "```", COMMANDS, "```", ""]
    parts += search_section(search, budget)
    lines, stats = test_section(cells, images, budget)
    parts += lines
    if stats:
        parts += verdict_lines(stats, budget)
    if not final_curves(frames, budget).empty:
        parts += ["## Validation MAE during training", "", f"![validation MAE]({FIGURE})", "",
                  "Each final run's validation MAE against optimizer steps (left) and training FLOPs (right); one "
                  "colour per family, one line per draw.", ""]
    parts += missing_lines(search, tests, budget, excluded_search + excluded_runs)
    return "\n".join(parts)


def plot(final: pd.DataFrame, path: Path) -> Path | None:
    """Validation MAE against steps and against training FLOPs, one colour per model (`final_curves`)."""
    if final.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    palette = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (model, mine) in enumerate(final.groupby("model", sort=True)):
        for n, (_, run) in enumerate(mine.groupby("run_row", sort=True)):
            run = run.sort_values("step")
            for ax, x in zip(axes, ("step", "train_pflops"), strict=True):
                ax.plot(pd.to_numeric(run[x]), pd.to_numeric(run["val_mae"]), color=palette(k % 10), lw=1,
                        alpha=0.8, label=model if n == 0 else None)
    for ax, label in zip(axes, ("optimizer steps", "training PFLOPs"), strict=True):
        ax.set_xlabel(label)
        ax.set_ylabel("validation MAE")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write(results: Path, docs: Path, budget: FairBudget) -> Path:
    """Write docs/comparison.md (and its figure where final runs have validation curves); returns the page."""
    frames = load(results)
    plot(final_curves(frames, budget), Path(docs) / FIGURE)
    page = Path(docs) / PAGE
    text = render(frames, budget)
    atomic_write(page, lambda tmp: Path(tmp).write_text(text))
    return page
