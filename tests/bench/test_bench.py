"""`zoo bench`: FLOPs against an analytic count, the OOM path, peak RSS of a fresh worker, the CSV schema."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.overrides import TorchFunctionMode

import zoo.bench.ceiling as ceiling
import zoo.bench.measure as measure
from zoo.bench import COLUMNS, BenchConfig, Unit, count_flops, run_bench
from zoo.bench.worker import run_isolated
from zoo.core import provenance
from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.data.synthetic import generate
from zoo.models import registry
from zoo.models.base import CrowdModel
from zoo.models.registry import Recipe, register_model
from zoo.models.weights.checkpoint import Checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY, BIG = "bench_test_tiny", "bench_test_big"


class TinyCounter(CrowdModel):
    """A stride-8 patch conv, a 1x1 conv and a per-cell linear head; count = sum of the cell outputs."""

    stride = 8

    def __init__(self, width: int = 16):
        super().__init__()
        self.backbone = nn.Conv2d(3, width, 8, stride=8)
        self.mix = nn.Conv2d(width, width, 1, groups=2)
        self.head = nn.Linear(width, 1)
        nn.init.constant_(self.head.bias, 1.0)  # about one head per cell: counts far from zero

    def forward(self, images):
        features = F.relu(self.mix(F.relu(self.backbone(images))))
        return {"density": self.head(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)}

    def loss(self, outputs, batch):
        counts = torch.tensor([float(len(p)) for p in batch.points])
        loss = F.mse_loss(outputs["density"].float().sum((1, 2, 3)), counts)
        return loss, {"mse": loss.detach()}

    def decode(self, outputs, sizes, threshold):
        return [Prediction(count=float(d.sum()), points=np.zeros((0, 2)), scores=np.zeros(0))
                for d in outputs["density"].float()]


def tiny_counter(pretrained=False, **overrides):
    return TinyCounter(**overrides)


def big_counter(pretrained=False, **overrides):
    return TinyCounter(width=4096)  # the 1x1 conv alone holds 8.4M parameters (34 MB)


@pytest.fixture(autouse=True, scope="module")
def test_models():
    recipe = Recipe(batch_size=2, crop_size=32, threshold=0.5)
    register_model(TINY, recipe=recipe, family="test")(tiny_counter)
    register_model(BIG, recipe=recipe, family="test")(big_counter)
    yield
    for name in (TINY, BIG):
        registry.unregister_model(name)


@pytest.fixture(autouse=True)
def small_ceiling(monkeypatch):
    monkeypatch.setattr(ceiling, "FULL_SIZE", {"cpu": 256, "cuda": 1024})  # 4096^2 takes seconds on 2 cores


def config(tmp_path, **changes) -> BenchConfig:
    values = dict(models=[TINY], resolution=(32, 48), iters=2, warmup=1, train_step=False, isolate=False,
                  out=tmp_path / "bench.csv")
    return BenchConfig(**{**values, **changes})


# --------------------------------------------------------------------------------------------------- FLOPs


class MatmulCounter(TorchFunctionMode):
    """FLOPs of matrix products called as torch functions (2 x M x K x N per broadcast batch element)."""

    functions = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.bmm}

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.functions:
            a, b = args[0], args[1]
            a_shape = (1, *a.shape) if a.dim() == 1 else tuple(a.shape)
            b_shape = (*b.shape, 1) if b.dim() == 1 else tuple(b.shape)
            batch = torch.broadcast_shapes(a_shape[:-2], b_shape[:-2])
            self.flops += 2 * int(np.prod(batch, dtype=np.int64)) * a_shape[-2] * a_shape[-1] * b_shape[-1]
        return func(*args, **(kwargs or {}))


def analytic_flops(model: nn.Module, images: torch.Tensor) -> int:
    """Convolutions and linear layers from their shapes (output sizes recorded by forward hooks), plus matmuls."""
    total = 0

    def conv(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        n, c_out, h, w = output.shape
        total += 2 * n * module.in_channels // module.groups * kh * kw * c_out * h * w

    def linear(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() // module.out_features * module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad(), MatmulCounter() as products:
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return total + products.flops


@pytest.mark.parametrize("name", [TINY, *registry.list_models()])
def test_flop_count_matches_analytic_count_of_convolutions(name):
    torch.manual_seed(0)
    model = registry.build_model(name).eval()
    images = torch.randn(2, 3, 64, 64)
    expected = analytic_flops(model, images)
    with torch.no_grad():
        counted = count_flops(model, images)
    assert expected > 0
    assert abs(counted - expected) / expected < 0.02, (counted, expected)


# ----------------------------------------------------------------------------------------- out of memory


def test_out_of_memory_at_one_batch_size_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    real = measure.forward_pass

    def fail_at_batch_two(runner, images):
        if images.shape[0] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(runner, images)

    monkeypatch.setattr(measure, "forward_pass", fail_at_batch_two)
    rows = run_bench(config(tmp_path, batch_sizes=(1, 2, 3)))
    assert [r["status"] for r in rows] == ["ok", "oom", "ok"]
    assert "out of memory" in rows[1]["note"] and rows[1]["images_per_s"] is None
    assert rows[0]["images_per_s"] > 0 and rows[2]["images_per_s"] > 0
    table = pd.read_csv(tmp_path / "bench.csv")
    assert list(table["status"]) == ["ok", "oom", "ok"] and np.isnan(table["images_per_s"][1])


def test_other_failures_are_errors_not_out_of_memory(tmp_path, monkeypatch):
    def fail(runner, images):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(measure, "forward_pass", fail)
    (row,) = run_bench(config(tmp_path))
    assert row["status"] == "error" and "shapes cannot be multiplied" in row["note"]


# ------------------------------------------------------------------------------------------ peak memory


def status_mb(field: str, code: str = "") -> float:
    """`field` (VmHWM, VmRSS) of /proc/self/status in MiB: of this process, or of a fresh one running `code`."""
    read = f"print([l.split()[1] for l in open('/proc/self/status') if l.startswith('{field}:')][0])"
    if code:
        text = subprocess.run([sys.executable, "-c", f"{code}\n{read}"], capture_output=True, text=True,
                              check=True).stdout
        return int(text) / 1024
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(f"{field}:"))) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from Linux's /proc")
def test_fresh_worker_reports_its_own_peak_rss_which_grows_with_the_model():
    # The worker starts from this process, which holds torch and 300 MB more. Linux carries getrusage's
    # ru_maxrss over fork and exec, so a figure inherited from here would exceed this process's RSS.
    ballast = torch.ones(300 * 2**20 // 4)  # noqa: F841  (kept alive while the workers run)

    def peak(name):
        unit = Unit(model=name, dtype="fp32", channels_last=False, compile=False, batch_size=1,
                    resolution=(16, 16), device="cpu", iters=1, warmup=0, train_iters=1, train_step=False,
                    isolated=True)
        row = run_isolated(unit)
        assert row["status"] == "ok", row
        return row["peak_rss_mb"]

    tiny, big = peak(TINY), peak(BIG)
    assert status_mb("VmHWM", "import torch") < tiny < status_mb("VmRSS")
    assert big > tiny + 25  # 8.4M more fp32 parameters: 34 MB


# ------------------------------------------------------------------------------------------------- CSV


def committed_columns() -> list[str]:
    """The header of the committed results/bench.csv, which docs/results.md documents column by column (generated
    by benchmarks/documents.py, which refuses a column it has no meaning for)."""
    return list(pd.read_csv(ROOT / "results" / "bench.csv", nrows=0).columns)


def test_the_committed_csv_has_the_schema_and_a_second_run_appends(tmp_path):
    assert committed_columns() == COLUMNS
    first = run_bench(config(tmp_path, isolate=None, train_step=True))  # the default on CPU: a fresh worker
    path = tmp_path / "bench.csv"
    before = path.read_text()
    second = run_bench(config(tmp_path, dtypes=("fp32", "bf16"), batch_sizes=(1, 2)))
    assert path.read_text().startswith(before)
    table = pd.read_csv(path)
    assert list(table.columns) == COLUMNS
    assert len(table) == len(first) + len(second) == 5
    row = table.iloc[0]
    assert row["status"] == "ok" and row["model"] == TINY and row["resolution"] == "32x48"
    assert row["peak_rss_mb"] > 0 and np.isnan(row["cuda_peak_allocated_mb"])  # no GPU figure without a GPU
    assert row["train_images_per_s"] > 0 and row["train_batch_size"] == 2 and row["train_crop"] == 32
    assert row["params_total"] == sum(p.numel() for p in TinyCounter().parameters())
    assert row["ceiling_fraction"] == pytest.approx(row["achieved_gflops_per_s"] / row["ceiling_gflops_per_s"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row["date"])
    later = table.iloc[1:]
    assert np.isnan(later["peak_rss_mb"]).all()  # in-process on CPU: no peak figure of its own


@pytest.mark.parametrize("capability, bf16, vnni, amx, expected", [
    ("AVX2", False, False, False, "AMD EPYC (AVX2)"),
    ("AVX512", True, True, False, "AMD EPYC (AVX512, BF16, VNNI)"),
    ("AVX512", True, True, True, "AMD EPYC (AVX512, BF16, VNNI, AMX)"),
])
def test_a_cpu_row_names_the_instructions_its_kernels_use(monkeypatch, capability, bf16, vnni, amx, expected):
    # Two machines of one model name differ here, and bf16 or int8 rows of one are no guide to the other
    monkeypatch.setattr(provenance, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert provenance.device_name(torch.device("cpu")) == expected


def test_the_ceiling_times_a_slow_route_on_a_smaller_workload_and_keeps_the_fastest_rate(monkeypatch):
    # GFLOP/s: a route without the CPU's instructions, a fast one, and the convolution the models' layers run
    rates = {"matmul": 1.0, "conv1x1": 100.0, "conv3x3": 150.0}
    timed = []

    def workload_seconds(route, n, device, dtype, repeats):
        timed.append((route, n))
        return ceiling.ROUTE_FLOPS[route](n) / (rates[route] * 1e9)

    monkeypatch.setattr(ceiling, "workload_seconds", workload_seconds)
    full = ceiling.FULL_SIZE["cpu"]
    budget = 3 * 2 * full**3 / 10e9  # warm-up and two repeats of the full product at 10 GFLOP/s
    assert ceiling.compute_ceiling(torch.device("cpu"), "bf16", budget_seconds=budget) == pytest.approx(150.0)
    # The full product would take minutes by the slow route: it is timed only by the fast ones
    quarter = full // 4
    assert timed == [("matmul", quarter), ("conv1x1", quarter), ("conv1x1", full), ("conv3x3", quarter),
                     ("conv3x3", full)]


def test_each_workload_is_timed_and_counted_as_the_convolution_it_runs():
    # The 3x3 workload's FLOPs are those torch's counter gives its convolution (2 per multiply-accumulate).
    channels, side = ceiling.conv3x3_shape(256)
    image, weight = torch.zeros(1, channels, side, side), torch.zeros(channels, channels, 3, 3)
    counted = count_flops(lambda x: torch.nn.functional.conv2d(x, weight, padding=1), image)
    assert ceiling.conv3x3_flops(256) == counted > 0
    for route in ceiling.ROUTES:
        assert 0 < ceiling.workload_seconds(route, 128, torch.device("cpu"), "fp32", repeats=1) < math.inf


def test_settings_share_weights_so_bf16_counts_compare_with_fp32(tmp_path):
    rows = run_bench(config(tmp_path, dtypes=("bf16",), fp32_reference=True, batch_sizes=(1, 2)))
    assert [(r["dtype"], r["batch_size"]) for r in rows] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    fp32, bf16 = rows[0], rows[2]
    assert fp32["count_rel_diff"] == 0 and fp32["speedup_vs_fp32"] == 1
    assert rows[1]["mean_count"] == pytest.approx(fp32["mean_count"], rel=1e-5)  # batch-size invariant input
    assert bf16["count_rel_diff"] == pytest.approx(bf16["mean_count"] / fp32["mean_count"] - 1)
    assert abs(bf16["count_rel_diff"]) < 0.05  # same seeded weights: only bf16 rounding separates them


def test_a_header_from_another_schema_is_not_appended_to(tmp_path):
    path = tmp_path / "bench.csv"
    path.write_text("model,images_per_s\np2pnet,3.0\n")
    with pytest.raises(ZooError, match="header"):
        run_bench(config(tmp_path))
    assert path.read_text() == "model,images_per_s\np2pnet,3.0\n"


def test_weights_give_accuracy_columns_and_the_figure(tmp_path):
    data = generate(tmp_path / "data", splits={"train": 1, "test": 3}, size=(64, 64))
    torch.manual_seed(1)
    checkpoint = tmp_path / "tiny.pt"
    Checkpoint(TINY, TinyCounter().state_dict()).save(checkpoint, for_inference=True)
    (row,) = run_bench(config(tmp_path, weights={TINY: str(checkpoint)}, data=str(data)))
    assert row["weights"] == str(checkpoint) and row["data"] == str(data)
    assert 0 <= row["mae"] <= row["mse"]  # MSE is the root of the mean squared error: never below the MAE
    assert 0 <= row["f1_8"] <= 1
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_weights_are_decoded_at_the_threshold_the_checkpoint_records_as_zoo_eval_does(tmp_path):
    from zoo.inference.predict import load_inference

    checkpoint = tmp_path / "tiny.pt"
    Checkpoint(TINY, TinyCounter().state_dict(), recipe={"threshold": 0.77}).save(checkpoint, for_inference=True)
    unit = Unit(model=TINY, dtype="fp32", channels_last=False, compile=False, batch_size=1, resolution=(32, 32),
                device="cpu", iters=1, warmup=0, train_iters=1, train_step=False, weights=str(checkpoint))
    _, threshold = measure.build(unit)
    assert threshold == load_inference(checkpoint).threshold == 0.77
    assert measure.build(Unit(**{**unit.to_dict(), "weights": None}))[1] == 0.5  # no weights: the recipe's


def test_onnxruntime_rows_state_their_runtime_and_count_as_the_torch_fp32_row(tmp_path):
    console = Console(file=io.StringIO(), width=200)
    cfg = config(tmp_path, runtimes=("torch", "onnxruntime"), dtypes=("fp32", "bf16"), channels_last=True)
    rows = run_bench(cfg, console=console)
    assert ("onnxruntime rows are fp32 or int8 on NCHW inputs, not compiled (bf16, channels_last: torch rows only)"
            in console.file.getvalue())
    assert [(r["runtime"], r["dtype"]) for r in rows] == [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32")]
    torch_fp32, _, onnx = rows
    assert onnx["status"] == "ok" and onnx["onnxruntime"] and torch_fp32["onnxruntime"] is None
    assert torch_fp32["channels_last"] is True and onnx["channels_last"] is False and onnx["compile"] is False
    assert onnx["mean_count"] == pytest.approx(torch_fp32["mean_count"], rel=1e-5)  # the same seeded weights
    assert onnx["speedup_vs_fp32"] == pytest.approx(onnx["images_per_s"] / torch_fp32["images_per_s"])
    assert pd.read_csv(tmp_path / "bench.csv")["runtime"].tolist() == ["torch", "torch", "onnxruntime"]
    with pytest.raises(ZooError, match="add fp32 or int8 to --dtype"):
        run_bench(config(tmp_path, runtimes=("onnxruntime",), dtypes=("bf16",)))


def test_int8_settings_run_on_onnxruntime_only(tmp_path):
    both = config(tmp_path, runtimes=("torch", "onnxruntime"), dtypes=("fp32", "int8"))
    assert [(s.runtime, s.dtype) for s in both.settings()] == [
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    with pytest.raises(ZooError, match="--dtype int8 runs on onnxruntime"):
        config(tmp_path, dtypes=("int8",)).validate()


def test_git_commit_marks_code_changes_dirty_and_ignores_documentation(tmp_path):
    def git(*args) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "zoo").mkdir()
    (tmp_path / "results").mkdir()
    for name in ("zoo/model.py", "zoo/NOTES.md", "README.md", "results/cells.csv"):
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "--short", "HEAD")
    for name in ("zoo/NOTES.md", "README.md", "results/cells.csv"):
        (tmp_path / name).write_text("v2\n")
    assert provenance.git_commit(tmp_path) == head
    (tmp_path / "zoo/model.py").write_text("v2\n")
    assert provenance.git_commit(tmp_path) == head + "+dirty"
    assert provenance.git_commit(tmp_path / "results").startswith(head)  # any folder of the checkout names its commit


def test_the_table_shows_counts_only_from_loaded_weights():
    from zoo.bench.report import table

    row = {"device": "cpu", "device_name": "cpu", "status": "ok", "model": "m", "dtype": "fp32", "compile": False,
           "channels_last": False, "runtime": "torch", "images_per_s": 1.0, "mean_count": 12.5}
    random = table([{**row, "weights": None}], (64, 64), {})
    trained = table([{**row, "weights": "runs/m/best.pt"}], (64, 64), {})
    assert "count" not in [c.header for c in random.columns] and "count" in [c.header for c in trained.columns]


def test_zoo_bench_writes_to_a_users_folder_unless_told():
    from zoo.cli import build_parser

    assert build_parser().parse_args(["bench"]).out == "bench_results/bench.csv"
    assert BenchConfig(models=["p2pnet"]).out is None
