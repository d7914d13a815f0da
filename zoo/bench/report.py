"""Benchmark output: the CSV schema (documented column by column in docs/results.md), environment metadata,
appending rows atomically, the terminal table and the accuracy-vs-throughput figure."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from zoo.core.csvrows import append_rows
from zoo.metrics.names import HEADLINE_METRICS, label

COLUMNS = [
    # environment
    "date", "git_commit", "device", "device_name", "torch", "torchvision", "timm", "onnxruntime", "cpu_threads",
    # what ran
    "model", "family", "weights", "runtime", "dtype", "channels_last", "compile", "resolution", "batch_size", "iters",
    "warmup", "status", "note",
    # size and cost
    "params_total", "params_trainable", "gflops_per_image",
    # speed
    "latency_ms_median", "latency_ms_p90", "images_per_s", "achieved_gflops_per_s", "ceiling_gflops_per_s",
    "ceiling_fraction", "speedup_vs_fp32", "train_images_per_s", "train_batch_size", "train_crop",
    # memory
    "peak_rss_mb", "cuda_peak_allocated_mb", "cuda_peak_reserved_mb",
    # counts on the fixed input, and accuracy
    "mean_count", "count_rel_diff", "data", *HEADLINE_METRICS,
]
#: measured once per model x setting (on its first batch size) and repeated on its other rows
PER_SETTING_COLUMNS = ("train_images_per_s", "train_batch_size", "train_crop", *HEADLINE_METRICS)




def append_csv(path: Path, rows: list[dict]) -> None:
    """Append benchmark rows to `path`, atomically, keeping the earlier rows (a file of another schema is refused)."""
    append_rows(path, rows, COLUMNS, schema="current benchmark", remedy="move it aside or pass another --out")


TABLE_COLUMNS = {  # key -> heading; a column is shown when some row has a value for it
    "model": "model", "setting": "setting", "batch_size": "batch", "status": "status", "params_m": "params M",
    "gflops_per_image": "GFLOPs", "latency_ms_median": "median ms", "latency_ms_p90": "p90 ms",
    "images_per_s": "img/s", "ceiling_percent": "% peak", "speedup_vs_fp32": "x fp32",
    "train_images_per_s": "train img/s", "memory_mb": "peak MB", "mean_count": "count",
    "count_rel_percent": "vs fp32", **{key: label(key) for key in ("mae", "mse", "f1_8")},
}


def table(rows: list[dict], resolution: tuple[int, int], ceilings: dict[str, float],
          instructions: dict[str, str | None] | None = None) -> Table:
    """The rows as a terminal table; `ceilings` (GFLOP/s; int8: GOP/s) and the instructions each can use
    (`instructions`, by dtype) are named in the caption."""
    cuda = bool(rows) and rows[0]["device"].startswith("cuda")
    instructions = instructions or {}
    ceiling_text = ", ".join(describe_ceiling(d, g, instructions.get(d)) for d, g in ceilings.items())
    caption = (f"GFLOPs = 2 x GMACs per image (torch.utils.flop_counter). % peak: achieved FLOP/s over a matmul "
               f"measured in this run ({ceiling_text}). Peak MB: "
               + ("CUDA max allocated." if cuda else "RSS of a fresh process per model.")
               + (" vs fp32: count difference from the fp32 row." if any(r.get("count_rel_diff") is not None
                                                                           for r in rows) else ""))
    # A count from random weights means nothing: shown only for rows with --weights (the CSV keeps it, where
    # it compares settings of the same seeded weights)
    shown = [dict(row, setting=setting_label(row), params_m=scaled(row.get("params_total"), 1e-6),
                  mean_count=row.get("mean_count") if row.get("weights") else None,
                  memory_mb=row.get("cuda_peak_allocated_mb") if cuda else row.get("peak_rss_mb"),
                  ceiling_percent=scaled(row.get("ceiling_fraction"), 100),
                  count_rel_percent=scaled(row.get("count_rel_diff"), 100)) for row in rows]
    keys = [k for k in TABLE_COLUMNS if any(row.get(k) is not None for row in shown)]
    device = rows[0]["device_name"] if rows else ""
    out = Table(title=f"zoo bench at {resolution[0]}x{resolution[1]} on {device}", caption=caption)
    for key in keys:
        out.add_column(TABLE_COLUMNS[key], justify="left" if key in ("model", "setting", "status") else "right")
    for row in shown:
        out.add_row(*[format_cell(key, row.get(key)) for key in keys], style=None if row["status"] == "ok" else "red")
    return out


def describe_ceiling(dtype: str, gflops: float, instructions: str | None) -> str:
    """E.g. "int8 900 GOP/s (avx512_vnni)": an int8 product's operations are integer ones."""
    unit = "GOP/s" if dtype == "int8" else "GFLOP/s"
    return f"{dtype} {gflops:,.0f} {unit}" + (f" ({instructions})" if instructions else "")


def scaled(value, factor: float):
    return None if value is None else value * factor


def setting_label(row: dict) -> str:
    return " ".join([row["dtype"]] + ["CL"] * bool(row["channels_last"]) + ["compiled"] * bool(row["compile"])
                    + [row["runtime"]] * (row["runtime"] != "torch"))


def format_cell(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key == "count_rel_percent":
        return f"{value:+.2f}%"
    if key == "ceiling_percent":
        return f"{value:.1f}%"
    if key == "speedup_vs_fp32":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def figure(rows: list[dict], path: Path) -> Path | None:
    """Accuracy (MAE) against inference throughput, one point per model and setting (its fastest batch size);
    None when no row has an accuracy."""
    best = {}
    for row in rows:
        if row.get("mae") is None or row.get("images_per_s") is None:
            continue
        key = (row["model"], setting_label(row))
        if key not in best or row["images_per_s"] > best[key]["images_per_s"]:
            best[key] = row
    if not best:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (model, setting), row in best.items():
        ax.scatter(row["images_per_s"], row["mae"])
        ax.annotate(f"{model} ({setting}, batch {row['batch_size']})", (row["images_per_s"], row["mae"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    first = next(iter(best.values()))
    ax.set_xlabel(f"images/s at {first['resolution']} on {first['device_name']}")
    ax.set_ylabel(f"{label('mae')} (test split)")
    ax.set_title(f"accuracy vs throughput on {Path(first['data']).name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
