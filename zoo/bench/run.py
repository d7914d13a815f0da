"""Running a benchmark: the machine's ceiling, every unit, the derived columns, then the outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from zoo.bench import report
from zoo.bench.ceiling import ceiling_instructions, compute_ceiling
from zoo.bench.config import BenchConfig, Unit
from zoo.bench.measure import export_for_unit, measure_unit, release
from zoo.bench.worker import run_isolated
from zoo.core import provenance
from zoo.core.errors import ZooError
from zoo.models.registry import get_entry


def run_bench(cfg: BenchConfig, console: Console | None = None) -> list[dict]:
    """Measure every model x setting x batch size, append the rows to `cfg.out` and return them."""
    console = console or Console(stderr=True)
    cfg.validate()
    for name in cfg.models:
        get_entry(name)  # an unknown name fails here, before any measuring
    device = torch.device(cfg.device)
    isolate = cfg.isolate if cfg.isolate is not None else device.type == "cpu"
    environment = provenance.environment(device)
    settings = cfg.settings()
    for note in cfg.notes():
        console.print(f"note: {note}")
    ceilings, instructions = {}, {}
    for dtype in dict.fromkeys(s.dtype for s in settings):
        ceilings[dtype] = compute_ceiling(device, dtype)
        instructions[dtype] = ceiling_instructions(device, dtype)
        console.print(f"ceiling: {report.describe_ceiling(dtype, ceilings[dtype], instructions[dtype])} matmul on "
                      f"{environment['device_name']}")
    rows = []
    # Removed at the end, or by its finalizer when a unit raises.
    exported = tempfile.TemporaryDirectory(prefix="zoo-bench-onnx-")
    for model in cfg.models:
        onnx = {}  # one export per model and file (fp32, or int8) serves all its runtimes and batch sizes
        for setting in settings:
            first = None
            for batch_size in cfg.batch_sizes:
                unit = Unit(model=model, dtype=setting.dtype,
                            channels_last=setting.channels_last, compile=setting.compile, batch_size=batch_size,
                            resolution=cfg.resolution, device=cfg.device, iters=cfg.iters, warmup=cfg.warmup,
                            train_iters=cfg.train_iters,
                            train_step=cfg.train_step and first is None and setting.runtime == "torch",
                            weights=cfg.weights.get(model), data=cfg.data if model in cfg.weights else None,
                            isolated=isolate, runtime=setting.runtime,
                            calibration=cfg.calibration if setting.dtype == "int8" else None)
                if setting.runtime != "torch":
                    kind = "int8" if setting.dtype == "int8" else "fp32"  # bf16 is OpenVINO's precision of fp32
                    if kind not in onnx:
                        console.print(f"exporting {model} to ONNX ({kind}) ...")
                        onnx[kind] = export_for_unit(unit, Path(exported.name) / f"{model}-{kind}.onnx")
                    unit.onnx = onnx[kind]
                console.print(f"measuring {model} {setting.label} batch {batch_size} ...")
                measured = run_isolated(unit) if isolate else measure_in_process(unit, device)
                if measured.get("stderr"):
                    console.print(escape(measured.pop("stderr")), style="red", highlight=False)
                row = {**environment, "model": model, "weights": unit.weights, "runtime": setting.runtime,
                       "dtype": setting.dtype, "channels_last": setting.channels_last, "compile": setting.compile,
                       "resolution": f"{cfg.resolution[0]}x{cfg.resolution[1]}", "batch_size": batch_size,
                       "iters": cfg.iters, "warmup": cfg.warmup, "data": unit.data,
                       "ceiling_gflops_per_s": ceilings.get(setting.dtype), **measured}
                first = first or row
                for key in report.PER_SETTING_COLUMNS:
                    row.setdefault(key, first.get(key))
                rows.append(row)
    exported.cleanup()
    add_derived(rows)
    # Piped or redirected output gets a readable width instead of rich's 80 columns; a terminal keeps its own.
    wide = console if console.is_terminal else Console(file=console.file, width=max(console.width, 180))
    wide.print(report.table(rows, cfg.resolution, ceilings, instructions))
    if cfg.out is not None:
        report.append_csv(cfg.out, rows)
        console.print(f"{len(rows)} row(s) appended to {escape(str(cfg.out))}")
        plot = report.figure(rows, cfg.out.with_suffix(".png"))
        if plot is not None:
            console.print(f"accuracy vs throughput: {escape(str(plot))}")
    return [{key: row.get(key) for key in report.COLUMNS} for row in rows]


def measure_in_process(unit: Unit, device: torch.device) -> dict:
    """A unit in this process (CUDA, or CPU without isolation); bugs become an error row, not a lost run."""
    try:
        return measure_unit(unit)
    except ZooError:
        raise
    except Exception as exc:
        return {"status": "error", "note": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        release(device)


def add_derived(rows: list[dict]) -> None:
    """Achieved FLOP/s and its fraction of the ceiling; count difference and speedup against the reference: the
    first fp32 row of the same model and batch size in this run."""
    reference = {}
    for row in rows:
        if row["dtype"] == "fp32" and row.get("images_per_s") is not None:
            reference.setdefault((row["model"], row["batch_size"]), row)
    for row in rows:
        if row.get("images_per_s") is None:
            continue
        row["achieved_gflops_per_s"] = row["gflops_per_image"] * row["images_per_s"]
        if row["ceiling_gflops_per_s"]:
            row["ceiling_fraction"] = row["achieved_gflops_per_s"] / row["ceiling_gflops_per_s"]
        ref = reference.get((row["model"], row["batch_size"]))
        if ref is None:
            continue
        row["speedup_vs_fp32"] = row["images_per_s"] / ref["images_per_s"]
        if ref["mean_count"]:  # relative to zero heads is undefined: left empty
            row["count_rel_diff"] = (row["mean_count"] - ref["mean_count"]) / ref["mean_count"]
