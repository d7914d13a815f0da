"""`zoo info`: the model card of a trained checkpoint, of converted weights and of a registered model name."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from support import ROOT, tiny_family  # noqa: F401  (registers tiny_density)

from zoo.bench.measure import count_flops
from zoo.cli import main
from zoo.models.registry import build_model
from zoo.models.weights.checkpoint import Checkpoint

TRAINED = ROOT / "tests" / "fixtures" / "tiny_density_v0_best.pt"


def card(capsys, *argv) -> dict:
    assert main(["info", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_trained_checkpoints_card(capsys):
    found = card(capsys, TRAINED, "--size", "64x96")
    recorded = Checkpoint.load(TRAINED)
    model = build_model("tiny_density", **recorded.model_kwargs)
    assert found["model"] == "tiny_density" and found["weights"] == str(TRAINED)
    assert found["parameters"] == sum(p.numel() for p in model.parameters())
    assert found["flops"] == {**found["flops"], "input": "64x96",
                              "flops": count_flops(model.eval(), torch.zeros(1, 3, 64, 96))}
    assert found["selection"]["metric"] == recorded.selection.metric
    assert found["selected_row"]["epoch"] == recorded.selection.epoch
    assert found["training"]["data"] == recorded.training["data"]
    assert found["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert found["source"] is None
    assert main(["info", str(TRAINED)]) == 0
    text = capsys.readouterr().out
    assert "tiny_density" in text and f"{found['parameters']:,}" in text


def test_converted_weights_name_their_source_file_and_sha256(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save({"state_dict": build_model("tiny_density").state_dict()}, tmp_path / "published.pth")
    found = card(capsys, tmp_path / "published.pth", "--model", "tiny_density")
    assert found["source"]["file"] == "published.pth"
    assert found["source"]["sha256"] == hashlib.sha256((tmp_path / "published.pth").read_bytes()).hexdigest()
    assert main(["info", str(tmp_path / "published.pth"), "--model", "tiny_density"]) == 0
    assert found["source"]["sha256"] in capsys.readouterr().out


def test_a_registered_models_card(capsys):
    found = card(capsys, "tiny_density", "--size", "32x32")
    assert found["weights"] is None and found["recipe"]["threshold"] == 0.3 and found["flops"]["flops"] > 0
    # The same card as trained weights, every field of theirs present, with nothing trained in it
    assert found.keys() == card(capsys, TRAINED, "--size", "32x32").keys()
    assert (found["training"], found["count_floor"], found["results"]) == (None, 0.0, [])


@pytest.mark.parametrize("argv", [["no_such_model_or_file"], ["tiny_density", "--size", "big"]])
def test_bad_targets_are_one_line(argv, capsys):
    assert main(["info", *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
