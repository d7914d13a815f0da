"""benchmarks/published_speed.py --paired on tiny sizes and hand-made rows: the README's speed table (latest run,
fastest zoo path), the v2 rows and columns, a runtime that is not installed and a compile that fails as status rows,
and a missing published checkout refused before the ceilings. No timing is asserted; the published code runs only
where its checkout is given."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)

from benchmarks import documents, published_speed
from benchmarks.published_speed import PAIRED_COLUMNS_V2, RunContext, Variant, main, paired_timing
from zoo.core.csvrows import append_rows

CONTEXT = RunContext("20260101T000000Z", 0.5, "other[1] 0.50", {"fp32": 100.0, "bf16": 400.0, "int8": 800.0},
                     {"fp32": "avx2", "bf16": "avx2", "int8": "avx2"})


def row(run, model, code, runtime, dtype, ms, *, last=False, compiled=False, status="ok", speedup=None, same=None):
    return {"run": run, "date": f"{run[:4]}-{run[4:6]}-{run[6:8]}T00:00:00+00:00", "device_name": "CPU (AVX2)",
            "cpu_threads": 2, "loaded": 0, "model": model, "code": code, "runtime": runtime, "dtype": dtype,
            "channels_last": last, "compile": compiled, "status": status, "median_ms": ms if status == "ok" else None,
            "speedup_vs_published_fp32": speedup, "speedup_vs_published_same_setting": same}


def hand_made(tmp_path):
    """Two runs; the older one holds a faster row that the README must not pick."""
    old, new = "20260101T000000Z", "20260202T000000Z"
    rows = [row(old, "p2pnet", "zoo", "onnxruntime", "int8", 1.0, speedup=900.0),
            row(new, "p2pnet", "published", "torch", "fp32", 600.0, speedup=1.0),
            row(new, "p2pnet", "published", "torch", "bf16", 50.0, last=True, speedup=12.0),  # published: never
            row(new, "p2pnet", "zoo", "torch", "bf16", 200.0, last=True, speedup=3.0, same=0.25),
            row(new, "p2pnet", "zoo", "torch", "bf16", 150.0, last=True, compiled=True, speedup=4.0, same=0.33),
            row(new, "p2pnet", "zoo", "openvino", "int8", 120.0, speedup=5.0),
            row(new, "p2pnet", "zoo", "openvino", "bf16", None, status="unsupported"),
            row(new, "cpn", "zoo", "torch", "fp32", 90.0),
            row(new, "cpn", "zoo", "torch", "bf16", 70.0, last=True),
            row(new, "cpn", "zoo", "onnxruntime", "fp32", 80.0),
            row(new, "cpn", "zoo", "openvino", "fp32", None, status="not_installed")]
    append_rows(tmp_path / "published_speed_v2.csv", rows, PAIRED_COLUMNS_V2, schema="v2", remedy="-")
    return tmp_path


def expected_speed(path) -> list[list[str]]:
    """The README table's cells computed on their own from the CSV: pandas' grouping and idxmin."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame[frame.run == frame.run.max()]
    ok = frame[frame.status == "ok"].assign(ms=lambda f: f.median_ms.astype(float))
    out = []
    for model in frame.model.unique():
        mine = ok[ok.model == model]
        def one(mine=mine, **setting):
            found = mine[(mine[list(setting)] == pd.Series(setting)).all(axis=1)]
            return found.iloc[0] if len(found) else None

        published_fp32 = one(code="published", runtime="torch", dtype="fp32", channels_last="False", compile="False")
        published_bf16 = one(code="published", runtime="torch", dtype="bf16", channels_last="True", compile="False")
        photos = one(code="zoo", runtime="torch", dtype="bf16", channels_last="True", compile="False")
        videos = one(code="zoo", runtime="torch", dtype="bf16", channels_last="True", compile="True")
        fastest = mine[mine.code == "zoo"].loc[mine[mine.code == "zoo"].ms.idxmin()]
        path = f"{fastest['runtime']} {fastest['dtype']}" + ", channels_last" * (fastest.channels_last == "True") \
            + ", compiled" * (fastest.compile == "True")

        def show(found, column, fmt):
            value = "" if found is None else found[column]
            return "" if value == "" else format(float(value), fmt)

        out.append([model, show(published_fp32, "median_ms", ".0f"), show(published_bf16, "median_ms", ".0f"),
                    show(photos, "median_ms", ".0f"), show(photos, "speedup_vs_published_same_setting", ".2f"),
                    show(videos, "median_ms", ".0f"), show(videos, "speedup_vs_published_same_setting", ".2f"),
                    path, show(fastest, "median_ms", ".0f"), show(fastest, "speedup_vs_published_fp32", ".2f"),
                    "CPU (AVX2)", "2", "0", frame.date.iloc[0][:10]])
    return out


def test_the_readme_speed_table_takes_the_latest_run_and_each_models_fastest_zoo_path(tmp_path):
    folder = hand_made(tmp_path)
    results = documents.Results(folder)
    table = documents.TABLES["speed"](results)
    got = [["".join(str(f) for f in cell) for cell in cells] for cells in table.rows]
    assert got == expected_speed(folder / "published_speed_v2.csv")
    # the fastest paths named, and cpn's published columns empty
    assert [r[7] for r in got] == ["openvino int8", "torch bf16, channels_last"]
    assert got[0][1:7] == ["600", "50", "200", "0.25", "150", "0.33"] and got[1][1:7] == ["", "", "70", "", "", ""]
    # the documents' other blocks of this file: a line per row, every column with a meaning
    assert len(documents.TABLES["published-speed-v2"](results).rows) == 11
    assert len(documents.TABLES["published-speed-v2-columns"](results).rows) == len(PAIRED_COLUMNS_V2)


def test_the_speed_table_is_its_header_alone_until_the_csv_exists(tmp_path):
    assert documents.TABLES["speed"](documents.Results(tmp_path)).rows == []


def failing_compile(model, *args, **kwargs):
    def run(images):
        raise RuntimeError("backend refused\nmore lines")

    return run


def test_a_missing_runtime_and_a_failed_compile_are_status_rows_and_the_rest_is_timed(monkeypatch):
    monkeypatch.setitem(published_speed.ZOO_ONLY, "tiny_density", "no published code: zoo rows only")
    monkeypatch.setattr(published_speed, "installed", lambda package: package != "openvino")
    monkeypatch.setattr(published_speed, "busy_processes", lambda: "other[1] 3.00")
    monkeypatch.setattr(published_speed, "load_1m", lambda: 9.0)
    monkeypatch.setattr(torch, "compile", failing_compile)
    variants = [Variant("zoo"), Variant("zoo", dtype="bf16", channels_last=True, compile=True),
                Variant("zoo", runtime="openvino", dtype="int8"), Variant("published")]
    rows = paired_timing("tiny_density", 2, (32, 32), CONTEXT, variants)
    by = {(r["runtime"], r["compile"]): r for r in rows}
    assert len(rows) == 3  # no published variant for a zoo-only model
    eager, compiled, openvino = by["torch", False], by["torch", True], by["openvino", False]
    assert [eager["status"], compiled["status"], openvino["status"]] == ["ok", "compile_failed", "not_installed"]
    assert "openvino" in openvino["note"] and "RuntimeError: backend refused" in compiled["note"]
    assert "more lines" not in compiled["note"]
    assert all("zoo rows only" in r["note"] for r in rows)
    for failed in (compiled, openvino):
        assert failed.get("median_ms") is None and failed.get("speedup_vs_published_fp32") is None
    assert eager["median_ms"] > 0 and eager["speedup_vs_published_fp32"] is None
    assert eager["gflops_per_image"] > 0 and eager["ceiling_gflops_per_s"] == 100.0
    assert eager["ceiling_fraction"] == pytest.approx(eager["achieved_gflops_per_s"] / 100.0)
    assert eager["achieved_gflops_per_s"] == pytest.approx(eager["gflops_per_image"] / eager["median_ms"] * 1e3)
    assert openvino["ceiling_gflops_per_s"] == 800.0 and openvino["ceiling_instructions"] == "avx2"
    assert all(r["loaded"] == 1 and r["busy_processes"] == "other[1] 3.00" for r in rows)  # 9 > the threads
    assert all(r["run"] == CONTEXT.run and r["run_load_1m"] == 0.5 for r in rows)
    assert set().union(*rows) - {"device", "torchvision", "timm"} <= set(PAIRED_COLUMNS_V2)


def test_a_missing_checkout_is_refused_before_the_ceilings(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CSRNET_PUBLISHED", str(tmp_path / "nothing"))

    def no_ceilings(*args):
        raise AssertionError("the ceilings were measured before the checkout was checked")

    monkeypatch.setattr(published_speed, "measure_ceilings", no_ceilings)
    out = tmp_path / "v2.csv"
    assert main(["--paired", "1", "--models", "csrnet_published", "--out", str(out)]) == 2
    assert "CSRNET_PUBLISHED" in capsys.readouterr().err and not out.exists()


@pytest.mark.skipif(not os.environ.get("CSRNET_PUBLISHED"),
                    reason="CSRNET_PUBLISHED is not set (a checkout of leeyeehoo/CSRNet-pytorch outside the repo)")
def test_the_published_csrnet_and_the_zoos_count_the_same_on_the_shared_weights():
    published_speed.register()
    rows = paired_timing("csrnet_published", 1, (64, 64), CONTEXT, [Variant("published"), Variant("zoo")])
    published, zoo = rows
    assert published["status"] == zoo["status"] == "ok"
    assert published["speedup_vs_published_fp32"] == 1.0 and published["speedup_vs_published_same_setting"] == 1.0
    assert zoo["count"] == pytest.approx(published["count"], rel=1e-3, abs=1e-3)
    assert zoo["gflops_per_image"] == pytest.approx(published["gflops_per_image"], rel=0.01)
