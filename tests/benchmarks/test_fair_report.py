"""The fair protocol's page (benchmarks/fair_report.py) from fake rows: tables, the bootstrap, the one verdict
rule, rows left out; and the committed docs/comparison.md is exactly what the generator writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import compare, fair_report, rows
from benchmarks.budgets import FAIR_V1

ROOT = Path(__file__).resolve().parents[2]
CLEAN = {"git_commit": "abc1234", "allow_dirty": 0, "precision": "bf16", "device": "cpu", "threads": "16",
         "device_name": "Intel Xeon (AVX512, BF16, VNNI, AMX)", "torch": "2.5.1", "date": "2027-01-01T00:00:00+00:00"}
ERRORS = {"p2pnet": ("points", 1.0), "csrnet_bn": ("density", 2.5), "cpn": ("heatmap", 4.0)}


def final_row(model: str, family: str, draw: int, mae: float, **extra) -> dict:
    row_id = f"fair-v1/final/{model}/d{draw}"
    return {"row_id": row_id, "kind": "test", "source_row": f"fair-v1/search/{model}/lr3e-4@128", "label": model,
            "budget": "fair-v1", "model": model, "family": family, "headline": int(model in FAIR_V1.headline),
            "trial": "lr3e-4", "n_train": 64, "draw": draw, "steps": 3840, "batch_size": 8, "crop_size": 128,
            "images_seen": 30720, "epochs": 480, "lr": 3e-4, "ema_decay": 0.998, "mae": mae, "mse": mae, "nae": 0.01,
            "f1_4": 0.5, "f1_8": 0.9, "nap_0.05": 0.1, "nap_0.25": 0.6, "nap_0.5": 0.8, "train_seconds": 1200.0,
            "wall_seconds": 1500.0, "cpu_hours": 6.0, "gflops_per_crop": 10.0, "train_pflops": 0.92, **CLEAN,
            **extra}


def fill(results: Path, dirty_extra: bool = True) -> None:
    """Three draws of every headline family, each test image off by the family's error; search rows; curves."""
    search = []
    for model, (family, _) in ERRORS.items():
        for trial, mae in (("lr1e-4", 5.0), ("lr3e-4", 3.0), ("lr1e-3", 4.0), ("lr3e-4-no-ema", 3.5)):
            search.append({"row_id": f"fair-v1/search/{model}/{trial}@128", "budget": "fair-v1", "model": model,
                           "family": family, "round": "menu", "trial": trial, "crop_size": 128, "lr": 3e-4,
                           "ema_decay": 0.99, "val_mae_best": mae, "val_mae_last": mae + 0.1, "best_step": 960,
                           "steps": 960, "train_seconds": 900.0, "wall_seconds": 1080.0, "cpu_hours": 4.8,
                           **CLEAN})
            if trial == "lr3e-4":
                search.append({**search[-1], "row_id": f"fair-v1/search/{model}/{trial}@256", "crop_size": 256,
                               "round": "crop", "val_mae_best": 9.0, "wall_seconds": 0.0, "cpu_hours": 0.0})
    rows.append_v1(results, "search", search)
    cells, images, curves = [], [], []
    for model, (family, error) in ERRORS.items():
        for draw in range(3):
            cells.append(final_row(model, family, draw, error))
            images += [{"row_id": f"fair-v1/final/{model}/d{draw}/{i:03d}cell.png",
                        "source_row": f"fair-v1/final/{model}/d{draw}", "model": model, "draw": draw,
                        "image": f"{i:03d}cell.png", "gt_count": 100, "pred_count": 100 + error * (-1) ** i}
                       for i in range(101, 111)]
            curves += [{"row_id": f"fair-v1/final/{model}/d{draw}@{step}", "run_row": f"fair-v1/final/{model}/d{draw}",
                        "stage": "final", "model": model, "draw": draw, "step": step, "images_seen": 8 * step,
                        "train_pflops": step * 2.4e-4, "val_mae": 20 / step ** 0.5 + error} for step in (192, 384)]
    if dirty_extra:
        cells.append(final_row("cpn_r18", "heatmap", 0, 0.5, git_commit="abc1234+dirty", allow_dirty=1))
        cells.append(final_row("cpn_r18", "heatmap", 1, 0.5, precision="off"))
    cells.append({"row_id": "fair-v1/baseline/mean-train/d0", "kind": "baseline", "budget": "fair-v1",
                  "label": "the mean count of the 64 training images of its draw, for every test image", "draw": 0,
                  "mae": 40.0, "mse": 50.0})
    rows.append_v1(results, "cells", cells)
    rows.append_v1(results, "images", images)
    rows.append_v1(results, "curves", curves)


def lines_after(markdown: str, heading: str) -> list[list[str]]:
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2:end]]


def test_a_page_without_rows_says_that_nothing_has_run(tmp_path):
    page = fair_report.write(tmp_path / "results", tmp_path / "docs", FAIR_V1).read_text()
    assert "No search trials yet" in page and "No final runs yet" in page
    assert ("still waits for (headline families): `fair-v1/search/p2pnet/lr3e-4@128`, `fair-v1/search/csrnet_bn/"
            "lr3e-4@128`, `fair-v1/search/cpn/lr3e-4@128`, `fair-v1/search/p2pnet/lr3e-4@256`") in page
    assert "comparison.png" not in page and not (tmp_path / "docs" / "comparison.png").exists()


def test_the_page_reports_means_intervals_verdicts_and_leaves_out_dirty_or_other_precision_rows(tmp_path):
    fill(tmp_path / "results")
    page = fair_report.write(tmp_path / "results", tmp_path / "docs", FAIR_V1).read_text()
    headline = {r[0]: r for r in lines_after(page, "### Headline rows")}
    p2p = headline["`p2pnet` (points)"]
    assert p2p[2] == "3/3" and p2p[3] == "1.00 ± 0.00" and p2p[4] == "[1.00, 1.00]"
    assert headline["`cpn` (heatmap)"][4] == "[4.00, 4.00]"
    assert "Extra rows" not in page  # both cpn_r18 rows are left out
    assert "`fair-v1/final/cpn_r18/d0`: trained at abc1234+dirty (uncommitted code)" in page
    assert "`fair-v1/final/cpn_r18/d1`: precision off, not the budget's bf16" in page
    assert "- `p2pnet` (points): mean 1.00, 95% interval [1.00, 1.00] over 3 draws: beats Count-ception" in page
    assert "`csrnet_bn` (density): mean 2.50" in page and "level with Count-ception (2.3 ± 0.4)" in page
    assert "falls short of PGC-Net (1.9 ± 0.1)" in page and "falls short of FCRN-A (2.9 ± 0.2)" in page
    assert "the best family beats Count-ception (2.3) with one view: **met** (`p2pnet` beats it)" in page
    assert ("density and heatmaps at least as good as FCRN-A (2.9): **missed** (`csrnet_bn` beats it, `cpn` falls "
            "short of it)") in page
    paired = {r[0]: r for r in lines_after(page, "### Paired differences")}
    assert paired["`p2pnet` - `csrnet_bn`"][2:] == ["-1.50", "[-1.50, -1.50]"]
    search = lines_after(page, "## Search")
    chosen = [r for r in search if r[-1] == "**chosen**"]
    assert [(r[0], r[2], r[3]) for r in chosen] == [(f"`{m}` ({f})", "`lr3e-4`", "128") for m, (f, _) in
                                                   ERRORS.items()]
    assert "Crop size: **128 px** for every family" in page
    # Cost of a trial: its CPU-hours, or a bound from its training seconds where the wall-clock undercounts them.
    assert [r[-2] for r in search if r[2] == "`lr1e-4`"] == ["4.80"] * 3
    assert [r[-2] for r in search if r[1] == "crop" and r[3] == "256"] == ["≥ 4.00"] * 3  # 900 s x 16 threads
    assert "| the mean count of the 64 training images of its draw, for every test image | 1 | 40.00 | 50.00 |" in page
    assert "Every headline family has its 3 draws." in page and "still waits for" not in page
    assert (tmp_path / "docs" / "comparison.png").stat().st_size > 0 and "![validation MAE](comparison.png)" in page


def test_the_bootstrap_is_the_two_way_resampling_it_claims():
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 1.0, (3, 20))
    lo, hi = fair_report.bootstrap_interval(values, resamples=400, seed=5)
    by_draw, by_image = fair_report.resample_weights(3, 20, 400, 5)
    means = []
    for d_counts, i_counts in zip(by_draw, by_image, strict=True):
        draws, images = np.repeat(np.arange(3), d_counts), np.repeat(np.arange(20), i_counts)
        means.append(values[np.ix_(draws, images)].mean())
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert lo < values.mean() < hi
    assert fair_report.bootstrap_interval(values - values) == (0.0, 0.0)


def test_the_verdict_rule_has_three_outcomes():
    anchor = fair_report.Anchor("A", 64, 2.3, 0.4, "")
    assert fair_report.verdict(1.0, 1.89, anchor) == "beats"
    assert fair_report.verdict(1.0, 1.9, anchor) == "level with"
    assert fair_report.verdict(2.71, 3.0, anchor) == "falls short of"
    assert fair_report.verdict(2.0, 2.2, fair_report.Anchor("B", 64, 2.3, None, "")) == "beats"  # no spread: 0


def test_the_committed_comparison_page_is_what_the_generator_writes():
    frames = fair_report.load(ROOT / "results")
    assert (ROOT / "docs" / fair_report.PAGE).read_text() == fair_report.render(frames, FAIR_V1)


def test_the_command_runs_fair_budgets_in_stages(tmp_path, capsys):
    options = ["--budget", "fair-v1", "--results", str(tmp_path / "r"), "--docs", str(tmp_path / "d")]
    assert compare.main(options) == 2
    assert "pass --stage search or --stage final" in capsys.readouterr().out
    assert compare.main([*options, "--stage", "final", "--draws", "2"]) == 2
    assert "--draws 2: fair-v1 runs at least 3 draws" in capsys.readouterr().out
    assert compare.main([*options, "--report-only"]) == 0
    assert "No search trials yet" in (tmp_path / "d" / "comparison.md").read_text()
