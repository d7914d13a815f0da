"""Published checkpoints: converted weights give the published networks' outputs, and bad files give one line."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import assets_path
from support.published_layouts import csrnet_state, p2pnet_state, published_csrnet, published_p2pnet

import zoo
from zoo.cli import main
from zoo.models.weights.checkpoint import Checkpoint, model_from_checkpoint


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("batch_norm", [True, False], ids=["vgg16_bn", "vgg16"])
def test_p2pnet_matches_the_published_forward_pass(tmp_path, images, batch_norm):
    state = p2pnet_state(batch_norm)
    torch.save({"model": state}, tmp_path / "SHTechA.pth")
    model = zoo.create_model("p2pnet", checkpoint_path=tmp_path / "SHTechA.pth")
    assert model.backbone.batch_norm == batch_norm
    with torch.no_grad():
        ours = model(images)
        theirs = published_p2pnet(state, images, batch_norm)
    # Pair proposals by their anchors: the two codes order them differently.
    order_ours = torch.argsort(ours["anchors"][0, :, 1] * 1e4 + ours["anchors"][0, :, 0])
    order_theirs = torch.argsort(theirs["anchors"][:, 1] * 1e4 + theirs["anchors"][:, 0])
    torch.testing.assert_close(ours["anchors"][0, order_ours], theirs["anchors"][order_theirs], rtol=0, atol=0)
    points_gap = (ours["points"][:, order_ours] - theirs["points"][:, order_theirs]).abs().max()
    probability_gap = (torch.sigmoid(ours["logits"][:, order_ours]) - theirs["probability"][:, order_theirs]).abs()
    assert points_gap < 0.05 and probability_gap.max() < 1e-3
    assert theirs["points"].abs().max() > 20  # the offsets are not all near zero: the check has teeth
    sizes = torch.tensor([[64, 64]] * 2)
    counts = [p.count for p in model.decode(ours, sizes, 0.5)]
    assert counts == (theirs["probability"] > 0.5).sum(1).float().tolist()


def test_csrnet_matches_the_published_forward_pass(tmp_path, images):
    state = csrnet_state()
    checkpoint = {"epoch": 300, "arch": "vgg16", "state_dict": state, "best_prec1": torch.tensor(66.4),
                  "optimizer": {"state": {}, "param_groups": [{"lr": 1e-7, "params": [0, 1]}]}}
    torch.save(checkpoint, tmp_path / "PartAmodel_best.pth.tar")
    model = zoo.create_model("csrnet", checkpoint_path=tmp_path / "PartAmodel_best.pth.tar")
    assert not model.backbone.batch_norm
    with torch.no_grad():
        density = model(images)["density"]
        reference = published_csrnet(state, images)
    assert density.shape == reference.shape == (2, 1, 8, 8)
    assert (density - reference).abs().max() < 1e-3 and reference.abs().max() > 0.1
    # The published code sums the raw map; the zoo's count leaves out negative cells (a count is never negative).
    counts = [p.count for p in model.decode({"density": density}, torch.tensor([[64, 64]] * 2), 0.02)]
    torch.testing.assert_close(torch.tensor(counts), reference.clamp(min=0).sum((1, 2, 3)), rtol=1e-4, atol=1e-3)
    assert (reference < 0).any()  # random weights: the clamp is exercised

def test_converted_models_reproduce_outputs_of_the_published_code(tmp_path, images):
    """tests/data/published_reference.npz holds the outputs of the published repositories' own networks
    (CrowdCounting-P2PNet models/p2pnet.py at 5c91a81, CSRNet-pytorch model.py), which loaded these same
    seeded state dicts with strict=True, on this input: made once in a scratch directory outside the repository."""
    reference = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "published_reference.npz")
    torch.save({"model": p2pnet_state()}, tmp_path / "p2pnet.pth")
    torch.save({"state_dict": csrnet_state()}, tmp_path / "csrnet.pth.tar")
    p2pnet = zoo.create_model("p2pnet", checkpoint_path=tmp_path / "p2pnet.pth")
    csrnet = zoo.create_model("csrnet", checkpoint_path=tmp_path / "csrnet.pth.tar")
    with torch.no_grad():
        ours = p2pnet(images)
        density = csrnet(images)["density"].numpy()
    # The published proposal order is cell-major (cell k, anchor a -> k * A + a); the zoo's is anchor-major.
    num_anchors = p2pnet.num_anchors
    points = ours["points"].unflatten(1, (num_anchors, -1)).transpose(1, 2).flatten(1, 2).numpy()
    probability = torch.sigmoid(ours["logits"]).unflatten(1, (num_anchors, -1)).transpose(1, 2).flatten(1).numpy()
    assert np.abs(points - reference["p2pnet_points"]).max() < 0.05
    assert np.abs(probability - reference["p2pnet_probability"]).max() < 1e-3
    assert np.abs(density - reference["csrnet_density"]).max() < 1e-3

@pytest.mark.parametrize("pack", [
    lambda s: {"model": s},  # lwcc
    lambda s: {f"CCN.{k}": v for k, v in s.items()},  # C-3-Framework, one GPU
    lambda s: {"net": {f"CCN.module.{k}": v for k, v in s.items()}, "epoch": 3},  # C-3-Framework latest_state
    lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},  # DataParallel
], ids=["lwcc", "c3f", "c3f-latest", "module"])
def test_csrnet_packings_load_the_same_weights(tmp_path, pack):
    state = csrnet_state(seed=2)
    torch.save(pack(state), tmp_path / "weights.pth")
    model = zoo.create_model("csrnet", checkpoint_path=tmp_path / "weights.pth")
    torch.testing.assert_close(model.state_dict()["backbone.features.21.weight"], state["frontend.21.weight"])
    torch.testing.assert_close(model.state_dict()["output.bias"], state["output_layer.bias"])


def test_convert_writes_a_zoo_checkpoint_with_provenance(tmp_path, images):
    import hashlib

    torch.save({"model": p2pnet_state()}, tmp_path / "SHTechA.pth")
    assert main(["convert", str(tmp_path / "SHTechA.pth"), "--model", "p2pnet", "--out", str(tmp_path / "p.pt")]) == 0
    saved = Checkpoint.load(tmp_path / "p.pt")
    assert saved.model_name == "p2pnet" and saved.model_kwargs["anchor_grid"] == (2, 2)
    assert saved.source["file"] == "SHTechA.pth"
    assert saved.source["sha256"] == hashlib.sha256((tmp_path / "SHTechA.pth").read_bytes()).hexdigest()
    assert "official P2PNet" in saved.source["layout"]
    direct = zoo.create_model("p2pnet", checkpoint_path=tmp_path / "SHTechA.pth")
    converted = zoo.create_model("p2pnet", checkpoint_path=tmp_path / "p.pt")
    with torch.no_grad():
        torch.testing.assert_close(direct(images)["points"], converted(images)["points"])


def error_of(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    return lines[0]


def test_bad_files_give_one_line(tmp_path, capsys):
    out = str(tmp_path / "out.pt")
    torch.save({"model": p2pnet_state()}, tmp_path / "p2p.pth")
    message = error_of(capsys, "convert", str(tmp_path / "p2p.pth"), "--model", "csrnet", "--out", out)
    assert "looks like a p2pnet checkpoint" in message and "csrnet" in message

    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "other.pth")
    message = error_of(capsys, "convert", str(tmp_path / "other.pth"), "--model", "p2pnet", "--out", out)
    assert "unknown layout" in message and "head.weight" in message and "fpn.P4_1.weight" in message

    state = p2pnet_state()
    state["fpn.P6_1.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "extra.pth")
    message = error_of(capsys, "convert", str(tmp_path / "extra.pth"), "--model", "p2pnet", "--out", out)
    assert "fpn.P6_1.weight" in message and "official P2PNet" in message

    state = p2pnet_state()
    state["fpn.P4_1.weight"] = torch.zeros(256, 256, 1, 1)
    torch.save({"model": state}, tmp_path / "shape.pth")
    message = error_of(capsys, "convert", str(tmp_path / "shape.pth"), "--model", "p2pnet", "--out", out)
    assert "fpn.P4_1.weight" in message and "(256, 256, 1, 1)" in message and "(256, 512, 1, 1)" in message

    (tmp_path / "cut.pth").write_bytes((tmp_path / "p2p.pth").read_bytes()[:5000])
    assert "unreadable" in error_of(capsys, "convert", str(tmp_path / "cut.pth"), "--model", "p2pnet", "--out", out)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert "unreadable" in error_of(capsys, "eval", "p2pnet", "--weights", str(tmp_path / "notes.txt"))
    assert not (tmp_path / "out.pt").exists()


def test_pickled_objects_need_the_trust_flag(tmp_path, capsys):
    torch.save({"state_dict": csrnet_state(), "args": argparse.Namespace(lr=1e-7)}, tmp_path / "pickled.pth")
    argv = ["convert", str(tmp_path / "pickled.pth"), "--model", "csrnet", "--out", str(tmp_path / "c.pt")]
    assert "--trust-pickle" in error_of(capsys, *argv)
    assert main([*argv, "--trust-pickle"]) == 0
    assert json.dumps(Checkpoint.load(tmp_path / "c.pt").source["packing"]) == json.dumps("{'state_dict': ...}")


def test_plain_csrnet_is_the_paper_and_older_bn_checkpoints_named_csrnet_still_load(tmp_path):
    assert not zoo.create_model("csrnet").backbone.batch_norm and zoo.create_model("csrnet_bn").backbone.batch_norm
    state = zoo.create_model("csrnet_bn").state_dict()
    torch.save({"model": state, "model_name": "csrnet", "model_kwargs": {}}, tmp_path / "old.pt")  # untyped layout
    model, checkpoint = model_from_checkpoint(tmp_path / "old.pt")
    assert model.backbone.batch_norm and any("batch_norm=True" in note for note in checkpoint.notes)
    torch.testing.assert_close(model.state_dict()["backend.1.running_var"], state["backend.1.running_var"])
    assert model_from_checkpoint(tmp_path / "old.pt", "csrnet_bn")[1].notes == []


def test_converted_weights_run_zoo_eval_and_zoo_predict_on_the_street_set(tmp_path, capsys):
    street = assets_path("people_counting_custom", "part_B")
    one = tmp_path / "street_one" / "test_data"  # one photo keeps this fast: 768x1024 through VGG-16 on a CPU
    for split in ("train_data", "test_data"):  # the layout needs a train split; eval reads only the test one
        for folder, name in (("images", "IMG_1.jpg"), ("ground-truth", "GT_IMG_1.mat")):
            (one.parent / split / folder).mkdir(parents=True)
            shutil.copy(street / split / folder / name, one.parent / split / folder / name)
    torch.save({"state_dict": csrnet_state()}, tmp_path / "PartBmodel_best.pth.tar")
    assert main(["convert", str(tmp_path / "PartBmodel_best.pth.tar"), "--model", "csrnet",
                 "--out", str(tmp_path / "csrnet.pt")]) == 0
    assert main(["eval", "--weights", str(tmp_path / "csrnet.pt"), "--data", str(one.parent), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["images"] == 1 and metrics["mae"] >= 0

    torch.save({"model": p2pnet_state()}, tmp_path / "SHTechB.pth")
    out = tmp_path / "predicted"
    assert main(["predict", "p2pnet", "--weights", str(tmp_path / "SHTechB.pth"), str(one / "images" / "IMG_1.jpg"),
                 "--out", str(out)]) == 0
    assert "converted from SHTechB.pth" in capsys.readouterr().err
    assert (out / "IMG_1_overlay.png").stat().st_size > 0 and (out / "summary.csv").is_file()
