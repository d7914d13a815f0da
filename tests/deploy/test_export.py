"""ONNX export and the onnxruntime runtime: for every registered model, one exported file answers like the torch
forward at several input sizes and batch sizes, its outputs decode to the same predictions, and the CLI exports,
predicts and scores with it; models that cannot be exported and mismatched files are refused in one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)
from torch import nn

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.types import Prediction
from zoo.data.synthetic import generate
from zoo.deploy.export import DEFAULT_OPSET, ONNX_INSTALL, export_onnx
from zoo.deploy.fold import prepare_for_inference
from zoo.deploy.runtime import OnnxRunner
from zoo.models import registry
from zoo.models.base import CrowdModel
from zoo.models.factory import create_model
from zoo.models.registry import Recipe, get_entry, get_recipe, list_models, register_model
from zoo.models.weights.checkpoint import Checkpoint

# The zoo's own models, not the test-only ones other test modules may have registered by collection time.
ZOO_MODELS = [name for name in list_models() if get_entry(name).module.startswith("zoo.")]
# Options that keep the default suite quick; with them the registered defaults run under -m slow.
SMALL = {"p2pnet": {"width": 32}}
# Exporting takes 5-20 s per model on this 2-core CPU; the ResNet-50 CPN and the paper's plain CSRNet (its
# family stays in the default suite as csrnet_bn) run under -m slow.
SLOW = {"cpn", "csrnet"}
# Input sides in strides (the export traces 2 x 3): not all square, each a multiple of the stride.
SIDES = [(2, 5), (4, 2), (3, 3)]
TOLERANCE = 1e-4  # fp32, relative to the largest magnitude of the output (at least 1)


def cases():
    for name in ZOO_MODELS:
        if name in SMALL:
            yield pytest.param((name, SMALL[name]), id=f"{name}-small")
        yield pytest.param((name, {}), id=name, marks=[pytest.mark.slow] * (name in SLOW or name in SMALL))


def perturbed(model: nn.Module) -> nn.Module:
    """`model` with seeded noise on every parameter: registered initializations start some outputs at constants
    (P2PNet's offsets at zero), which would agree between runtimes whatever the exported graph computes."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            scale = 0.2 * parameter.abs().mean() + 0.01
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model


@pytest.fixture(scope="module", params=list(cases()))
def exported(request, tmp_path_factory):
    name, options = request.param
    torch.manual_seed(0)
    model = prepare_for_inference(perturbed(create_model(name, **options)))
    path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
    export_onnx(model, path, threshold=get_recipe(name).threshold)
    return model, OnnxRunner(path, threads=torch.get_num_threads())


def leaves(outputs) -> list[tuple[str, torch.Tensor]]:
    if isinstance(outputs, torch.Tensor):
        return [("", outputs)]
    items = outputs.items() if isinstance(outputs, dict) else enumerate(outputs)
    return [(f"{key}.{inner}".rstrip("."), tensor) for key, value in items for inner, tensor in leaves(value)]


@pytest.mark.parametrize("batch", [1, 2])
def test_one_file_matches_the_torch_forward_at_three_input_sizes(exported, batch):
    model, runner = exported
    generator = torch.Generator().manual_seed(batch)
    for rows, cols in SIDES:
        images = torch.randn(batch, 3, rows * model.stride, cols * model.stride, generator=generator)
        with torch.no_grad():
            expected = model(images)
        got = runner(images)
        assert type(got) is type(expected) and list(got) == list(expected)  # same keys, in the same order
        for (name, value), (_, reference) in zip(leaves(got), leaves(expected), strict=True):
            assert value.dtype == reference.dtype and value.shape == reference.shape, name
            scale = max(1.0, reference.abs().max().item())
            assert (value - reference).abs().max().item() <= TOLERANCE * scale, (name, images.shape)


def test_decoding_the_onnxruntime_outputs_gives_the_torch_predictions(exported):
    model, runner = exported
    s = model.stride
    images = torch.randn(2, 3, 3 * s, 4 * s, generator=torch.Generator().manual_seed(3))
    sizes = torch.tensor([[3 * s, 4 * s], [3 * s - s // 2, 3 * s + 1]])  # the second image is partly padding
    with torch.no_grad():
        expected_outputs = model(images)
    got_outputs = runner(images)
    # -inf keeps every candidate (proposal, local maximum), so the test compares them all; the recipe's threshold
    # is the one used.
    for threshold in (-math.inf, get_recipe(model.registry_name).threshold):
        expected = model.decode(expected_outputs, sizes, threshold)
        got = model.decode(got_outputs, sizes, threshold)
        if threshold == -math.inf:
            assert all(len(p.points) for p in expected)
        for g, e in zip(got, expected, strict=True):
            assert g.count == pytest.approx(e.count, rel=TOLERANCE, abs=TOLERANCE)
            assert g.points.shape == e.points.shape
            np.testing.assert_allclose(g.points, e.points, atol=1e-3)
            np.testing.assert_allclose(g.scores, e.scores, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ the CLI

# The CLI does the same for every model (the registered ones are compared above); a tiny test family exports in
# a second instead of 5-30.
CLI_MODEL = "tiny_density"
THRESHOLD = ["--threshold", "0"]  # its random weights put few cells above the recipe's 0.3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    Checkpoint(CLI_MODEL, create_model(CLI_MODEL).state_dict()).save(path, for_inference=True)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    # Sides that are multiples of 4, as tiny_density's decoding needs (the registered models pad, tested above).
    for name, shape in {"wide.png": (44, 68, 3), "tall.png": (64, 40, 3)}.items():
        cv2.imwrite(str(folder / name), (rng.random(shape) * 255).astype(np.uint8))
    return folder


def predictions(folder: Path) -> dict[str, tuple[float, np.ndarray]]:
    summary = pd.read_csv(folder / "summary.csv")
    return {Path(row.image).name: (row.count, pd.read_csv(folder / f"{Path(row.image).stem}_points.csv").to_numpy())
            for row in summary.itertuples()}


def assert_same_predictions(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name, (count, points) in got.items():
        assert count == pytest.approx(expected[name][0], rel=TOLERANCE), name
        np.testing.assert_allclose(points, expected[name][1], atol=0.011)  # the CSVs' 2 decimals, rounding apart


def test_export_then_predict_and_eval_on_onnxruntime_as_on_torch(checkpoint, images, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(checkpoint), "--format", "onnx", "--out", str(path)]) == 0
    assert f"ONNX opset {DEFAULT_OPSET}" in capsys.readouterr().out
    runner = OnnxRunner(path)
    assert runner.metadata["zoo.model"] == CLI_MODEL and json.loads(runner.metadata["zoo.outputs"]) == {
        "density": "density"}
    assert float(runner.metadata["zoo.threshold"]) == get_recipe(CLI_MODEL).threshold
    assert int(runner.metadata["zoo.stride"]) == 4
    assert {p.domain: p.version for p in onnx.load(path).opset_import}[""] == DEFAULT_OPSET
    predict = ["predict", "--weights", str(checkpoint), str(images), *THRESHOLD]
    assert main([*predict, "--out", str(tmp_path / "torch")]) == 0
    assert main([*predict, "--out", str(tmp_path / "ort"), "--onnx", str(path)]) == 0
    expected = predictions(tmp_path / "torch")
    assert any(len(points) for _, points in expected.values())
    assert_same_predictions(predictions(tmp_path / "ort"), expected)

    data = generate(tmp_path / "data", seed=0, splits={"train": 1, "test": 2}, size=(64, 96))
    scores = []
    for extra in ([], ["--onnx", str(path)]):
        capsys.readouterr()
        assert main(["eval", "--weights", str(checkpoint), "--data", str(data), "--json", *THRESHOLD, *extra]) == 0
        scores.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    torch_scores, onnx_scores = scores
    assert onnx_scores.keys() == torch_scores.keys() and torch_scores["images"] == 2
    for key, value in torch_scores.items():  # null: NAE without any person in the split
        assert onnx_scores[key] is None if value is None else onnx_scores[key] == pytest.approx(value, rel=1e-4), key


def test_predict_on_onnxruntime_exports_for_the_run_and_ignores_amp_saying_so(checkpoint, images, tmp_path,
                                                                                capsys):
    predict = ["predict", "--weights", str(checkpoint), str(images), *THRESHOLD]
    assert main([*predict, "--out", str(tmp_path / "torch")]) == 0
    capsys.readouterr()
    assert main([*predict, "--out", str(tmp_path / "ort"), "--runtime", "onnxruntime", "--amp", "bf16"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert warnings == ["warning: --amp bf16 does not apply to --runtime onnxruntime: the exported model runs in "
                        "float32"]
    assert_same_predictions(predictions(tmp_path / "ort"), predictions(tmp_path / "torch"))


# ------------------------------------------------------------------------------------------ bad inputs


class DataDependent(CrowdModel):
    """Its forward branches on values: torch.export cannot trace it for every input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, images):
        density = self.conv(images)
        return {"density": density if density.sum() > 0 else -density}

    def decode(self, outputs, sizes, threshold):
        return [Prediction(float(d.sum()), np.zeros((0, 2)), np.zeros(0)) for d in outputs["density"]]


class CountsOnly(DataDependent):
    """Returns a Python number beside its map: ONNX outputs are tensors only."""

    def forward(self, images):
        return {"density": self.conv(images), "count": 0.0}


class MapPyramid(DataDependent):
    """Nested outputs (a tuple of maps inside the dict) from a graph that exports."""

    def forward(self, images):
        density = self.conv(images)
        return {"levels": (density, nn.functional.avg_pool2d(density, 2)), "total": density.sum((1, 2, 3))}


@pytest.fixture(scope="module")
def test_family():
    recipe = Recipe(threshold=0.5)
    names = {"export_test_data_dependent": DataDependent, "export_test_counts_only": CountsOnly}
    for name, cls in names.items():
        register_model(name, recipe=recipe, family="test")(lambda pretrained=False, cls=cls: cls())
    yield names
    for name in names:
        registry.unregister_model(name)


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("name, reason", [("export_test_data_dependent", "forward"),
                                          ("export_test_counts_only", "count is a float")])
def test_a_model_that_cannot_be_exported_says_why_in_one_line(test_family, name, reason, tmp_path, capsys):
    weights = tmp_path / "model.pt"
    Checkpoint(name, test_family[name]().state_dict()).save(weights, for_inference=True)
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 2
    message = one_line_error(capsys)
    assert f"{name}: cannot be exported to ONNX" in message and reason in message
    assert not out.exists() and list(tmp_path.iterdir()) == [weights]  # no partial file left


def test_nested_outputs_come_back_in_their_structure_at_the_requested_opset(tmp_path):
    torch.manual_seed(0)
    model = MapPyramid().eval()
    path = tmp_path / "pyramid.onnx"
    written = export_onnx(model, path, threshold=0.5, opset=20)
    assert json.loads(written["zoo.outputs"]) == {"levels": ["levels.0", "levels.1"], "total": "total"}
    assert {p.domain: p.version for p in onnx.load(path).opset_import}[""] == 20
    images = torch.randn(3, 3, 40, 24)
    got, expected = OnnxRunner(path)(images), model(images)
    assert list(got) == ["levels", "total"] and len(got["levels"]) == 2
    for (_, a), (_, b) in zip(leaves(got), leaves(expected), strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ZooError, match="multiples of 8"):
        OnnxRunner(path)(torch.zeros(1, 3, 36, 24))


def test_bad_checkpoints_and_files_are_refused_in_one_line(checkpoint, images, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["export", "--weights", str(garbage), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "unreadable checkpoint" in one_line_error(capsys)

    predict = ["predict", "--weights", str(checkpoint), str(images), "--out", str(tmp_path / "out")]
    assert main([*predict, "--onnx", str(garbage)]) == 2
    assert "onnxruntime cannot load it" in one_line_error(capsys)
    assert main([*predict, "--runtime", "torch", "--onnx", str(garbage)]) == 2
    assert "--onnx FILE runs on onnxruntime" in one_line_error(capsys)


def test_a_file_exported_from_other_weights_is_refused(checkpoint, images, tmp_path, capsys):
    other = tmp_path / "other.pt"
    state = Checkpoint.load(checkpoint)
    state.provenance = {"note": "same network, another file"}
    state.save(other, for_inference=True)
    path = tmp_path / "other.onnx"
    assert main(["export", "--weights", str(other), "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["predict", "--weights", str(checkpoint), str(images), "--out", str(tmp_path / "out"),
                 "--onnx", str(path)]) == 2
    assert f"was not exported from {checkpoint}" in one_line_error(capsys)


@pytest.mark.parametrize("missing, argv", [("onnxruntime", ["predict", "--runtime", "onnxruntime"]),
                                           ("onnxscript", ["export", "--out", "never.onnx"])])
def test_missing_onnx_packages_name_the_extra(checkpoint, images, tmp_path, capsys, monkeypatch, missing, argv):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail as if it were not installed
    command, *flags = argv
    paths = [str(images), "--out", str(tmp_path / "out")] if command == "predict" else []
    assert main([command, "--weights", str(checkpoint), *paths, *flags]) == 2
    message = one_line_error(capsys)
    assert missing in message and ONNX_INSTALL in message


def test_help_and_list_import_neither_torch_nor_onnx():
    heavy = ("torch", "onnx", "onnxruntime", "onnxscript")
    code = ("import sys\nfrom zoo.cli import main\nfor argv in (['--help'], ['export', '--help'], ['list']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            f"print(sorted(set({heavy!r}) & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
