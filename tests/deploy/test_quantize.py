"""int8 static quantization for onnxruntime: a calibrated QDQ file answers close to the float32 model, keeps the
metadata the runtime decodes with, and the CLI writes and runs it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)

from zoo.cli import main
from zoo.data.synthetic import generate
from zoo.deploy.export import export_onnx
from zoo.deploy.fold import prepare_for_inference
from zoo.deploy.quantize import calibration_batches, edge_convolutions, quantize_onnx
from zoo.deploy.runtime import OnnxRunner
from zoo.models.factory import create_model
from zoo.models.weights.checkpoint import Checkpoint


@pytest.fixture(scope="module")
def crowds(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "crowds", seed=0, splits={"train": 4, "test": 1},
                    size=(96, 128))


def seeded_csrnet():
    """CSRNet-BN whose map holds about a head per cell and varies with the image (random weights start near 0)."""
    torch.manual_seed(0)
    net = create_model("csrnet_bn")
    with torch.no_grad():
        net.output.weight.mul_(100)
        net.output.bias.fill_(1.0)
    return prepare_for_inference(net)


def test_int8_density_is_close_to_float32(tmp_path, crowds):
    model = seeded_csrnet()
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, fp32, threshold=0.02)
    quantize_onnx(fp32, int8, calibration_batches(str(crowds), model.stride, count=4), "synthetic train")
    ops = {node.op_type for node in onnx.load(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # a QDQ graph, not the float one renamed
    image = next(calibration_batches(str(crowds), model.stride, count=1, seed=5))
    images = torch.from_numpy(image)
    with torch.no_grad():
        reference = model(images)["density"]
    runner = OnnxRunner(int8)
    quantized = runner(images)["density"]
    # 3 images: the train split is 4 less the fifth held out to validate
    assert runner.metadata["zoo.precision"] == "int8" and "synthetic train (3 images)" in runner.metadata[
        "zoo.calibration"]
    assert runner.metadata["zoo.model"] == "csrnet_bn" and json.loads(runner.metadata["zoo.outputs"]) == {
        "density": "density"}
    relative = float((quantized - reference).norm() / reference.norm())
    assert 0 < relative < 0.1  # quantized (not bit-equal) yet close
    assert abs(float(quantized.sum() / reference.sum()) - 1) < 0.03


def test_a_narrower_percentile_narrows_the_activation_ranges_and_the_file_says_which(tmp_path, crowds):
    model = seeded_csrnet()
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, threshold=0.02)
    scales, methods = {}, {}
    for percentile in (99.0, 99.99):
        int8 = tmp_path / f"int8-{percentile}.onnx"
        quantize_onnx(fp32, int8, calibration_batches(str(crowds), model.stride, count=4), "synthetic train",
                      percentile=percentile)
        graph = onnx.load(int8).graph
        constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        # the activations' scales: those of QuantizeLinear nodes fed by a computed tensor, not a weight
        scales[percentile] = np.array([float(constants[n.input[1]]) for n in graph.node
                                       if n.op_type == "QuantizeLinear" and n.input[0] not in constants])
        methods[percentile] = OnnxRunner(int8).metadata["zoo.quantization"]
    assert len(scales[99.0]) == len(scales[99.99]) > 0
    assert (scales[99.0] <= scales[99.99] + 1e-12).all() and (scales[99.0] < scales[99.99]).any()
    assert "1.00-99.00 percentile" in methods[99.0] and "0.01-99.99 percentile" in methods[99.99]


def test_cli_exports_int8_and_predicts_with_it(tmp_path, crowds, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    Checkpoint("tiny_density", create_model("tiny_density").state_dict()).save(checkpoint, for_inference=True)
    out = tmp_path / "tiny.int8.onnx"
    assert main(["export", "--weights", str(checkpoint), "--out", str(out), "--int8", "--calibration", str(crowds),
                 "--calibration-images", "2"]) == 0
    assert "int8 (QDQ)" in capsys.readouterr().out
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").symlink_to(next((crowds / "test_data" / "images").iterdir()))
    assert main(["predict", "--weights", str(checkpoint), str(images), "--onnx", str(out), "--out",
                 str(tmp_path / "pred"), "--threshold", "0"]) == 0
    assert (tmp_path / "pred" / "summary.csv").is_file()
    assert main(["export", "--weights", str(checkpoint), "--out", str(tmp_path / "x.onnx"), "--calibration",
                 str(crowds)]) == 2
    assert capsys.readouterr().err.strip().endswith("--calibration is for --int8 (its activation ranges are "
                                                     "measured on those images)")
    assert not (tmp_path / "x.onnx").exists()


def test_calibration_images_are_whole_training_images_padded_to_the_stride(crowds):
    batches = list(calibration_batches(str(crowds), 32, count=3))
    assert len(batches) == 3 and all(b.shape == (1, 3, 96, 128) and b.dtype == np.float32 for b in batches)
    assert len(list(calibration_batches(str(crowds), 32, count=10))) == 3  # no more than the train split holds


def test_the_convolutions_at_the_input_and_the_outputs_stay_float(tmp_path):
    model = seeded_csrnet()
    export_onnx(model, tmp_path / "fp32.onnx", threshold=0.02)
    graph = onnx.load(tmp_path / "fp32.onnx").graph
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    edges = edge_convolutions(onnx.load(tmp_path / "fp32.onnx"))
    assert len(convs) == 17 and len(edges) == 2
    reads_image = [n for n in edges if "images" in convs[n].input]
    writes_density = [n for n in edges if "density" in convs[n].output]
    assert len(reads_image) == 1 and len(writes_density) == 1
