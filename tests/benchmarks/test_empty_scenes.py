"""`python -m benchmarks.empty`: rows before and after the floor validation chose, for a checkpoint trained a step."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.console import Console

from benchmarks import empty as empty_scenes
from zoo.data.synthetic import generate
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty_scenes")
    data = generate(root / "data", seed=0, splits={"train": 4, "val": 3, "test": 2}, size=(64, 96))
    torch.manual_seed(0)
    result = train(TrainConfig(model="csrnet", data=str(data), out=str(root / "run"), device="cpu", amp="off",
                               recipe=dict(epochs=1, batch_size=2, crop_size=64)), console=Console(quiet=True))
    return Path(result["checkpoint"])


def test_rows_before_and_after_follow_the_rule(checkpoint, tmp_path, capsys):
    out = tmp_path / "empty.csv"
    assert empty_scenes.main(["--weights", f"small={checkpoint}", "--out", str(out), "--allow-dirty",
                              "--write-floored", "--size", "32", "--per-kind", "3"]) == 0
    rows = pd.read_csv(out)
    assert list(rows.columns) == empty_scenes.COLUMNS
    # the photos (64 x 96) hold a head in every 32 px window: the generated kinds only, each before and after
    assert sorted(zip(rows["stage"], rows["kind"], strict=True)) == sorted(
        (stage, kind) for stage in ("after", "before") for kind in ("blank", "texture", "synthetic"))
    assert (rows["n_images"] == 3).all() and (rows["model"] == "small").all()
    before = rows[rows["stage"] == "before"].set_index("kind")
    after = rows[rows["stage"] == "after"].set_index("kind")
    assert (before["floor"] == 0).all() and after["floor"].nunique() == 1
    assert (after["mean_count"] <= before["mean_count"]).all() and (after["max_count"] <= before["max_count"]).all()
    floor = float(after["floor"].iloc[0])
    if after["floor_reached"].iloc[0]:
        assert (after["val_empty_mean"] < 0.5).all()
        assert (after["val_mae"] <= before["val_mae"] + before["val_mae_spread"]).all()
        written = checkpoint.with_name(f"{checkpoint.stem}_floor.pt")
        assert Checkpoint.load(written).count_floor == floor
    else:
        assert floor == 0 and after[["mean_count", "test_mae"]].equals(before[["mean_count", "test_mae"]])
    assert rows["device_name"].notna().all() and rows["git_commit"].notna().all()
    assert capsys.readouterr().out.startswith("small: ")


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert empty_scenes.main(["--weights", f"x={tmp_path / 'none.pt'}", "--out", "", "--allow-dirty"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.pt" in err[0]
