"""The typed checkpoint: files of the release before it migrate and predict as they did, a saved checkpoint comes
back whole, the selection metric is stored as the metric (AP for pose, not 1 - AP), and files this version cannot
or should not read are refused in one line."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.inference.predict import load_inference
from zoo.models.factory import create_model
from zoo.models.weights import checkpoint as checkpoint_module
from zoo.models.weights.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, Selection, model_from_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V0 = {"best": FIXTURES / "tiny_density_v0_best.pt", "last": FIXTURES / "tiny_density_v0_last.pt"}


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURES / "tiny_density_v0_expected.npz"))


def predictions(path: Path, images: np.ndarray):
    run = load_inference(path, amp="off")
    with torch.no_grad():
        out = run.model(torch.from_numpy(images))
    return run, run.model.decode(out, torch.tensor([[48, 64], [40, 56]]), run.threshold)


def assert_predicts_as_recorded(path: Path, expected: dict) -> None:
    run, preds = predictions(path, expected["images"])
    assert run.threshold == float(expected["threshold"]) and run.model.count_scale == float(expected["count_scale"])
    # The weights load bit for bit; the convolutions sum in an order that depends on the thread count, so the
    # outputs are held to float32 rounding (a wrong weight, threshold or scale moves them by far more)
    np.testing.assert_allclose([p.count for p in preds], expected["counts"], rtol=1e-6)
    for k, p in enumerate(preds):
        np.testing.assert_allclose(p.dense_map, expected[f"map{k}"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(p.points, expected[f"points{k}"])


@pytest.mark.parametrize("kind", ["best", "last"])
def test_files_of_the_untyped_layout_predict_as_they_did(kind, expected, tmp_path):
    assert_predicts_as_recorded(V0[kind], expected)
    # ... and so does the migrated checkpoint once written in this format
    Checkpoint.load(V0[kind]).save(tmp_path / "v1.pt", for_inference=kind == "best")
    assert_predicts_as_recorded(tmp_path / "v1.pt", expected)


def test_the_untyped_layout_migrates_to_fields():
    raw = torch.load(V0["last"], weights_only=True)
    best, last = Checkpoint.load(V0["best"]), Checkpoint.load(V0["last"])
    for checkpoint in (best, last):
        assert checkpoint.model_name == "tiny_density" and checkpoint.model_kwargs == {}
        assert checkpoint.selection == Selection("mae", raw["best_val_mae"], 3, "lower")
        assert checkpoint.threshold == raw["threshold"] and checkpoint.count_scale == raw["count_scale"]
        assert checkpoint.recipe == raw["config"]["recipe"] and checkpoint.history == raw["history"]
        assert {k: checkpoint.training[k] for k in ("data", "seed", "amp", "world_size", "epochs", "steps")} == {
            "data": "/tmp/fx/data", "seed": 0, "amp": "off", "world_size": 1, "epochs": 3, "steps": 3}
        assert checkpoint.source is None and checkpoint.provenance["git_commit"] == "88c631e"
        assert checkpoint.normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert not best.resumable and best.optimizer is None and best.torch_rng is None
    assert last.resumable and last.epoch == 3 and last.step == 3
    torch.testing.assert_close(last.torch_rng, raw["torch_rng"], rtol=0, atol=0)
    assert last.optimizer["param_groups"] == raw["optimizer"]["param_groups"]


def full_checkpoint() -> Checkpoint:
    """A checkpoint with every field set to something other than its default."""
    torch.manual_seed(3)
    weights = create_model("tiny_density", width=4).state_dict()
    return Checkpoint(
        model_name="tiny_density", weights=weights, model_kwargs={"width": 4}, recipe={"lr": 0.01, "epochs": 5},
        threshold=0.35, count_scale=1.25, normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
        selection=Selection("f1_8", 0.5, 4), training={"data": "synthetic", "seed": 2, "protocol": "cells"},
        history=[{"epoch": 1, "val_f1_8": 0.5}], results=[{"split": "test", "mae": 1.5}],
        source={"file": "a.pth", "sha256": "0" * 64, "layout": "zoo", "packing": "bare state dict",
                "preprocessing": "none"},
        provenance={"git_commit": "abc1234", "torch": "2.x", "device_name": "cpu", "started": "now"},
        optimizer={"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        scaler={"scale": 2.0}, torch_rng=torch.get_rng_state(), trained={k: v + 1 for k, v in weights.items()},
        average={"n_averaged": torch.tensor(5)}, epoch=5, step=40)


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_save_then_load_keeps_every_field(tmp_path):
    original = full_checkpoint()
    original.notes = ["said while loading"]
    original.save(tmp_path / "last.pt", for_inference=False)
    loaded = Checkpoint.load(tmp_path / "last.pt")
    for f in fields(Checkpoint):
        if f.name != "notes":
            assert_same(getattr(original, f.name), getattr(loaded, f.name))
    assert loaded.notes == []  # they describe one loading, not the weights

    original.save(tmp_path / "best.pt", for_inference=True)
    inference = Checkpoint.load(tmp_path / "best.pt")
    for f in fields(Checkpoint):
        if f.name in checkpoint_module.RESUME_FIELDS:
            assert getattr(inference, f.name) is None
        elif f.name != "notes":
            assert_same(getattr(original, f.name), getattr(inference, f.name))


def test_a_file_of_this_version_is_read_without_migration(tmp_path, monkeypatch):
    full_checkpoint().save(tmp_path / "v1.pt", for_inference=True)
    raw = torch.load(tmp_path / "v1.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == FORMAT_VERSION == 1 and "model" not in raw

    def no_migration(*args):
        raise AssertionError("a version-1 file went through a migration")

    monkeypatch.setattr(checkpoint_module, "_v0_to_v1", no_migration)
    monkeypatch.setattr(checkpoint_module, "convert", no_migration)
    assert Checkpoint.load(tmp_path / "v1.pt", "tiny_density").selection == Selection("f1_8", 0.5, 4, "higher")


def untyped_pose(best_val_mae: float, history: list[dict]) -> dict:
    weights = create_model("tiny_density").state_dict()
    return {"model": weights, "model_name": "tiny_density", "model_kwargs": {"num_keypoints": 17},
            "config": {"train": {"data": "coco-persons"}, "recipe": {}, "world_size": 1}, "epoch": 2, "step": 8,
            "history": history, "best_val_mae": best_val_mae, "threshold": 0.5, "provenance": {}}


def test_a_pose_checkpoint_is_selected_on_ap_which_is_better_higher(tmp_path):
    history = [{"epoch": 1, "val_ap": 0.5, "val_selection": 0.5}, {"epoch": 2, "val_ap": 0.625, "val_selection": 0.375}]
    torch.save(untyped_pose(0.375, history), tmp_path / "pose.pt")
    selection = Checkpoint.load(tmp_path / "pose.pt").selection
    assert selection == Selection("ap", 0.625, 2) and selection.direction == "higher"
    assert selection.improved_by(0.7) and not selection.improved_by(0.6)

    torch.save(untyped_pose(0.25, []), tmp_path / "no_history.pt")  # the stored 1 - AP, turned back into AP
    assert Checkpoint.load(tmp_path / "no_history.pt").selection == Selection("ap", 0.75, None, "higher")

    Checkpoint.load(tmp_path / "pose.pt").save(tmp_path / "v1.pt", for_inference=True)
    assert Checkpoint.load(tmp_path / "v1.pt").model_card()["selection"] == {
        "metric": "ap", "best": 0.625, "epoch": 2, "direction": "higher"}
    with pytest.raises(ZooError, match="higher"):
        Selection("mae", direction="higher")


def test_a_checkpoint_never_validated_has_no_best_value(tmp_path):
    raw = torch.load(V0["last"], weights_only=True)
    torch.save({**raw, "best_val_mae": float("inf"), "history": []}, tmp_path / "last.pt")
    selection = Checkpoint.load(tmp_path / "last.pt").selection
    assert selection == Selection("mae") and selection.improved_by(3.0) and not selection.improved_by(float("nan"))


def test_a_file_of_a_future_version_is_refused_in_one_line(tmp_path, capsys):
    payload = full_checkpoint().to_dict(for_inference=True)
    torch.save({**payload, "version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(ZooError) as refused:
        Checkpoint.load(tmp_path / "future.pt")
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path / "future.pt") in message and f"version {FORMAT_VERSION + 1}" in message
    assert main(["eval", "tiny_density", "--weights", str(tmp_path / "future.pt")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "newer" in lines[0]


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    payload = full_checkpoint().to_dict(for_inference=True)
    payload["training"]["args"] = argparse.Namespace(lr=0.1)
    torch.save(payload, tmp_path / "pickled.pt")
    with pytest.raises(ZooError, match="trust"):
        Checkpoint.load(tmp_path / "pickled.pt")
    assert Checkpoint.load(tmp_path / "pickled.pt", trust_pickle=True).training["args"].lr == 0.1


def test_published_and_bare_weights_are_converted_and_record_their_source(tmp_path):
    torch.manual_seed(0)
    weights = create_model("tiny_density").state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "bare.pth")
    with pytest.raises(ZooError, match="name the model"):
        Checkpoint.load(tmp_path / "bare.pth")
    model, checkpoint = model_from_checkpoint(tmp_path / "bare.pth", "tiny_density")
    assert checkpoint.selection is None and checkpoint.training == {} and checkpoint.threshold is None
    card = checkpoint.model_card()
    assert card["source"]["sha256"] == hashlib.sha256((tmp_path / "bare.pth").read_bytes()).hexdigest()
    assert card["source"]["packing"] == "{'state_dict': ...}, 'module.' prefix"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_zoo_convert_keeps_the_training_record_and_names_the_file(tmp_path):
    assert main(["convert", str(V0["last"]), "--model", "tiny_density", "--out", str(tmp_path / "c.pt")]) == 0
    before, after = Checkpoint.load(V0["last"]), Checkpoint.load(tmp_path / "c.pt")
    assert after.source == {"file": V0["last"].name, "sha256": hashlib.sha256(V0["last"].read_bytes()).hexdigest(),
                            "layout": "zoo"}
    assert not after.resumable and after.selection == before.selection and after.threshold == before.threshold
    assert after.count_scale == before.count_scale and after.provenance == before.provenance
    assert all(torch.equal(after.weights[k], v) for k, v in before.weights.items())
