"""benchmarks/train_speed.py on tiny sizes: its rows and columns, the speedups' reference rows, a missing published
checkout, the load flag and a failed compile. No timing is asserted; the published code's own steps run only where
its checkout is given."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)

from benchmarks import documents, train_speed
from benchmarks.train_speed import COLUMNS, add_derived, is_loaded, main

TINY = ["--batch", "2", "--crop", "32", "--iters", "1", "--warmup", "0", "--threads", "1"]


@pytest.fixture
def quick(monkeypatch):
    """No measured ceiling (seconds of workloads) and a known load."""
    monkeypatch.setattr(train_speed, "compute_ceiling", lambda device, precision: {"fp32": 100.0, "bf16": 400.0}[
        precision])
    monkeypatch.setattr(train_speed, "busy_processes", lambda: "other[1] 1.00")
    return monkeypatch


def failing_compile(model, *args, **kwargs):
    def run(images):
        raise RuntimeError("backend refused\nmore lines")

    return run


def test_rows_have_every_column_a_missing_checkout_is_one_note_and_a_failed_compile_a_status(
        quick, tmp_path, mini_cells, capsys):
    quick.setenv("CSRNET_PUBLISHED", str(tmp_path / "no-checkout"))
    quick.setattr(train_speed, "load_1m", lambda: 1.5)
    quick.setattr(torch, "compile", failing_compile)
    out = tmp_path / "train_speed.csv"
    assert main(["--models", "tiny_density", "--data", str(mini_cells), "--out", str(out), *TINY]) == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if "published rows skipped" in line]
    assert len(skipped) == 1 and "CSRNET_PUBLISHED" in skipped[0]
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == COLUMNS
    assert [(r.code, r.precision, r.channels_last, r.compiled) for r in frame.itertuples()] == [
        ("zoo", "fp32", 0, 0), ("zoo", "bf16", 1, 0), ("zoo", "fp32", 0, 1), ("zoo", "bf16", 1, 1)]
    eager, compiled = frame[frame.compiled == 0], frame[frame.compiled == 1]
    assert (eager.status == "ok").all() and (compiled.status == "compile_failed").all()
    assert compiled.note.str.contains("RuntimeError: backend refused").all()
    assert not compiled.note.str.contains("more lines").any()
    assert frame.note.str.contains("CSRNET_PUBLISHED").all()
    assert frame.run.nunique() == 1 and (frame.threads == 1).all() and (frame.batch == 2).all()
    assert (frame.loaded == 1).all() and (frame.load_1m == 1.5).all()  # 1.5 > 1 thread
    assert (frame.busy_processes == "other[1] 1.00").all()
    filled = ["date", "git_commit", "device_name", "torch", "crops_per_s", "step_ms_median", "step_ms_p10",
              "step_ms_p90", "data_ms_per_batch", "train_gflops_per_crop", "achieved_gflops_per_s",
              "ceiling_gflops_per_s", "ceiling_fraction"]
    assert (eager[filled] != "").all().all()
    assert (frame.speedup_vs_published_fp32 == "").all() and (frame.speedup_vs_published_same_precision == "").all()
    numbers = eager.apply(pd.to_numeric, errors="coerce")
    assert (numbers.ceiling_gflops_per_s.tolist()) == [100.0, 400.0]
    assert numbers.achieved_gflops_per_s.tolist() == pytest.approx(
        (numbers.train_gflops_per_crop * numbers.crops_per_s).tolist())
    assert numbers.ceiling_fraction.tolist() == pytest.approx(
        (numbers.achieved_gflops_per_s / numbers.ceiling_gflops_per_s).tolist())
    assert (numbers.train_gflops_per_crop > 0).all()
    # the documents' blocks are made from such a file: every column has a meaning, every row a line
    results = documents.Results(tmp_path)
    assert len(documents.TABLES["train-speed"](results).rows) == len(frame)
    assert len(documents.TABLES["train-speed-columns"](results).rows) == len(COLUMNS)


def test_the_load_flag_is_set_only_above_the_thread_count():
    assert not is_loaded(2.0, 2) and not is_loaded(0.3, 2)
    assert is_loaded(2.01, 2) and is_loaded(5.0, 4)


def row(model, code, precision, ms, *, compiled=0, status="ok", run="r1", batch=8):
    return {"run": run, "model": model, "code": code, "precision": precision, "compiled": compiled,
            "status": status, "batch": batch, "crop": 128, "step_ms_median": ms if status == "ok" else None}


def test_speedups_come_from_the_published_rows_of_the_same_run_model_batch_and_precision():
    rows = [
        row("p2pnet", "published", "fp32", 400.0), row("p2pnet", "published", "bf16", 200.0),
        row("p2pnet", "zoo", "fp32", 100.0), row("p2pnet", "zoo", "bf16", 50.0),
        row("p2pnet", "zoo", "bf16", 25.0, compiled=1),
        row("csrnet_bn", "published", "fp32", 90.0), row("csrnet_bn", "published", "bf16", 0, status="error"),
        row("csrnet_bn", "zoo", "bf16", 30.0), row("csrnet_bn", "zoo", "fp32", 0, status="compile_failed"),
        row("cpn", "zoo", "fp32", 10.0),
        row("p2pnet", "zoo", "fp32", 100.0, run="r2"),  # another run: no reference of its own
        row("p2pnet", "zoo", "fp32", 100.0, batch=32),  # another batch: likewise
    ]
    add_derived(rows)
    got = [(r["model"], r["code"], r["precision"], r["speedup_vs_published_fp32"],
            r["speedup_vs_published_same_precision"]) for r in rows]
    assert got == [
        ("p2pnet", "published", "fp32", 1.0, 1.0), ("p2pnet", "published", "bf16", 2.0, 1.0),
        ("p2pnet", "zoo", "fp32", 4.0, 4.0), ("p2pnet", "zoo", "bf16", 8.0, 4.0),
        ("p2pnet", "zoo", "bf16", 16.0, 8.0),
        ("csrnet_bn", "published", "fp32", 1.0, 1.0), ("csrnet_bn", "published", "bf16", None, None),
        ("csrnet_bn", "zoo", "bf16", 3.0, None), ("csrnet_bn", "zoo", "fp32", None, None),
        ("cpn", "zoo", "fp32", None, None),
        ("p2pnet", "zoo", "fp32", None, None), ("p2pnet", "zoo", "fp32", None, None),
    ]


@pytest.mark.parametrize(("model", "variable"), [("p2pnet", "P2PNET_PUBLISHED"), ("csrnet_bn", "CSRNET_PUBLISHED")])
def test_the_published_step_runs_beside_the_zoos(quick, tmp_path, mini_cells, model, variable):
    if not os.environ.get(variable):
        pytest.skip(f"${variable} is not set: it names the published checkout (benchmarks/published_speed.py)")
    out = tmp_path / "train_speed.csv"
    assert main(["--models", model, "--data", str(mini_cells), "--out", str(out), "--no-compile", *TINY]) == 0
    frame = pd.read_csv(out)
    assert (frame.status == "ok").all(), frame.note.tolist()
    published = frame[frame.code == "published"]
    assert published.precision.tolist() == ["fp32", "bf16"]
    assert published.speedup_vs_published_same_precision.tolist() == [1.0, 1.0]
    assert (frame.train_gflops_per_crop > 0).all()
    assert frame[frame.code == "zoo"].speedup_vs_published_fp32.notna().all()
