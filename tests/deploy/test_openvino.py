"""The OpenVINO runtime: the zoo's ONNX export runs on OpenVINO's CPU plugin with the torch forward's outputs and
counts (fp32), its int8 quantization runs, bf16 is run or refused by what the CPU has, and `zoo predict` and
`zoo bench` take `--runtime openvino`; without the package, one line says how to install it."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from support import tiny_family  # noqa: F401  (registers tiny_density)

from zoo.bench import BenchConfig, run_bench
from zoo.bench import ceiling as bench_ceiling
from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.deploy import runtime
from zoo.deploy.export import export_onnx
from zoo.deploy.fold import prepare_for_inference
from zoo.deploy.quantize import quantize_onnx
from zoo.deploy.runtime import OPENVINO_INSTALL, OnnxRunner, OpenVinoRunner
from zoo.models.factory import create_model
from zoo.models.weights.checkpoint import Checkpoint

openvino = pytest.importorskip("openvino", reason="the optional openvino package (pip install 'crowd-zoo[openvino]') "
                                                  "is not installed; CI runs without it")

MODEL = "tiny_density"
TOLERANCE = 1e-4  # fp32, relative to the largest magnitude of the output (at least 1)


def tiny_model():
    """tiny_density with seeded weights and a last bias that puts about a head in every cell: counts well above 0,
    so that relative differences mean something."""
    torch.manual_seed(0)
    model = create_model(MODEL)
    with torch.no_grad():
        model.head[-1].bias.fill_(1.0)
    return prepare_for_inference(model).eval()


def exported(tmp_path: Path, model) -> Path:
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, threshold=0.0)
    return path


def images(batch: int = 2, height: int = 24, width: int = 36, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def counts(model, outputs, batch: torch.Tensor) -> list[float]:
    sizes = torch.tensor([batch.shape[-2:]] * len(batch))
    return [p.count for p in model.decode(outputs, sizes, 0.0)]


def test_fp32_outputs_and_counts_equal_the_torch_forward(tmp_path):
    model = tiny_model()
    runner = OpenVinoRunner(exported(tmp_path, model), "fp32", threads=1)
    for batch in (images(2, 24, 36), images(1, 40, 16, seed=1)):  # one file, dynamic batch and sides
        with torch.no_grad():
            expected = model(batch)
        got = runner(batch)
        assert list(got) == ["density"] and got["density"].dtype == torch.float32
        assert got["density"].shape == expected["density"].shape
        scale = max(1.0, expected["density"].abs().max().item())
        assert (got["density"] - expected["density"]).abs().max().item() <= TOLERANCE * scale
        torch_counts = counts(model, expected, batch)
        assert min(torch_counts) > 1
        assert counts(model, got, batch) == pytest.approx(torch_counts, rel=TOLERANCE)
    assert runner.metadata["zoo.model"] == MODEL and runner.stride == 4


def test_outputs_are_not_overwritten_by_the_next_inference(tmp_path):
    model = tiny_model()
    runner = OpenVinoRunner(exported(tmp_path, model), "fp32", threads=1)
    first = runner(images(seed=0))["density"]
    kept = first.clone()
    runner(images(seed=1))
    assert torch.equal(first, kept)


def test_int8_runs_the_qdq_file_and_gives_finite_counts_near_fp32(tmp_path):
    model = tiny_model()
    fp32, int8 = exported(tmp_path, model), tmp_path / "int8.onnx"
    calibration = iter([images(1, 32, 32, seed=s).numpy() for s in range(4)])
    quantize_onnx(fp32, int8, calibration, "random images")
    batch = images(seed=7)
    quantized = OpenVinoRunner(int8, "int8", threads=1)
    got = counts(model, quantized(batch), batch)
    with torch.no_grad():
        reference = counts(model, model(batch), batch)
    assert all(math.isfinite(c) for c in got)
    assert got == pytest.approx(reference, rel=0.2)  # quantized, not another model
    assert quantized.metadata["zoo.precision"] == "int8"
    onnxruntime = counts(model, OnnxRunner(int8, threads=1)(batch), batch)  # the same file on the other runtime
    assert got == pytest.approx(onnxruntime, rel=0.05)


def test_bf16_runs_where_the_cpu_has_it_and_is_refused_in_one_line_where_not(tmp_path, monkeypatch):
    model = tiny_model()
    path = exported(tmp_path, model)
    if "BF16" in runtime.openvino_capabilities():
        batch = images()
        with torch.no_grad():
            reference = model(batch)["density"]
        got = OpenVinoRunner(path, "bf16", threads=1)(batch)["density"]
        assert got.dtype == torch.float32
        assert float((got - reference).norm() / reference.norm()) < 0.05
    monkeypatch.setattr(runtime, "openvino_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(ZooError, match="bf16 needs a CPU with bf16 instructions") as error:
        OpenVinoRunner(path, "bf16")
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------ the CLI


def checkpoint_and_images(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny_density checkpoint of seeded weights, and a folder with one image whose sides are multiples of 4."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    Checkpoint(MODEL, create_model(MODEL).state_dict()).save(checkpoint, for_inference=True)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "wide.png"), (rng.random((44, 68, 3)) * 255).astype(np.uint8))
    return checkpoint, folder


def summary(folder: Path) -> list[float]:
    return pd.read_csv(folder / "summary.csv")["count"].tolist()


def test_predict_on_openvino_counts_as_torch(tmp_path):
    checkpoint, folder = checkpoint_and_images(tmp_path)
    predict = ["predict", "--weights", str(checkpoint), str(folder), "--threshold", "0"]
    assert main([*predict, "--out", str(tmp_path / "torch")]) == 0
    assert main([*predict, "--out", str(tmp_path / "ov"), "--runtime", "openvino"]) == 0
    assert summary(tmp_path / "ov") == pytest.approx(summary(tmp_path / "torch"), rel=TOLERANCE, abs=1e-3)


def test_missing_openvino_says_how_to_install_it_in_one_line(tmp_path, capsys, monkeypatch):
    checkpoint, folder = checkpoint_and_images(tmp_path)
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail as if it were not installed
    assert main(["predict", "--weights", str(checkpoint), str(folder), "--out", str(tmp_path / "out"),
                 "--runtime", "openvino"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and OPENVINO_INSTALL in lines[0], lines
    assert not (tmp_path / "out").exists()  # refused before exporting or predicting


# ------------------------------------------------------------------------------------------------ zoo bench


def test_bench_openvino_rows_count_as_the_torch_fp32_row(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_ceiling, "FULL_SIZE", {"cpu": 256, "cuda": 1024})  # a ceiling in milliseconds
    console = Console(file=io.StringIO(), width=200)
    cfg = BenchConfig(models=[MODEL], resolution=(32, 48), iters=1, warmup=1, train_step=False, isolate=False,
                      runtimes=("torch", "openvino"), dtypes=("fp32",), out=tmp_path / "bench.csv")
    torch_row, ov_row = run_bench(cfg, console=console)
    assert (torch_row["runtime"], ov_row["runtime"]) == ("torch", "openvino")
    assert ov_row["status"] == "ok" and ov_row["note"] == f"openvino {openvino.__version__}"
    assert ov_row["mean_count"] == pytest.approx(torch_row["mean_count"], rel=1e-4)
    assert pd.read_csv(tmp_path / "bench.csv")["runtime"].tolist() == ["torch", "openvino"]
    monkeypatch.setattr(runtime, "openvino_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(ZooError, match="bf16 needs a CPU with bf16 instructions"):  # before any export
        BenchConfig(models=[MODEL], runtimes=("openvino",), dtypes=("bf16",)).validate()


def test_an_unreadable_file_is_refused_in_one_line_with_openvinos_reason(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_text("not a model")
    for missing_or_broken in (tmp_path / "absent.onnx", path):
        with pytest.raises(ZooError, match=f"{missing_or_broken.name}: openvino cannot load it") as error:
            OpenVinoRunner(missing_or_broken)
        assert "\n" not in str(error.value) and "Exception from" not in str(error.value)
