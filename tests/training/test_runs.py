"""Nothing a user made is lost: concurrent result rows, re-run training folders, checkpoint sizes."""

from __future__ import annotations

import json
import multiprocessing

import pandas as pd
import pytest
import torch
from rich.console import Console
from support import (
    tiny_family,  # noqa: F401  (registers tiny_density)
    write_shanghaitech,
)

from zoo.cli import main
from zoo.core.csvrows import append_rows
from zoo.core.errors import ZooError
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train

COLUMNS = ["writer", "row", "note"]
QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_shanghaitech(tmp_path_factory.mktemp("data"), {"train": 8, "val": 4, "test": 4}, seed=3)


def tiny(data, out=None, console=QUIET, **settings) -> dict:
    settings = {"amp": "off", **settings, "recipe": {"epochs": 1, **settings.get("recipe", {})}}
    return train(TrainConfig("tiny_density", data=str(data), out=out and str(out), **settings), console=console)


def append_one_by_one(path, writer: int, n: int, start) -> None:
    start.wait()  # every writer begins together, so their appends overlap
    for row in range(n):
        append_rows(path, [{"writer": writer, "row": row, "note": "a, quoted \"cell\""}], COLUMNS,
                    schema="test", remedy="none")


def test_concurrent_appends_keep_every_row(tmp_path):
    path = tmp_path / "rows.csv"
    writers, n = 4, 50
    context = multiprocessing.get_context("fork")  # the children need no fresh interpreter: starts in milliseconds
    start = context.Barrier(writers)
    processes = [context.Process(target=append_one_by_one, args=(path, w, n, start)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * writers
    table = pd.read_csv(path)
    assert list(table.columns) == COLUMNS
    assert len(table) == writers * n
    assert sorted(zip(table["writer"], table["row"], strict=True)) == [(w, r) for w in range(writers) for r in range(n)]
    assert (table["note"] == 'a, quoted "cell"').all()


def test_a_second_default_run_gets_the_next_folder_and_resume_continues_the_latest(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny(dataset)
    first = (tmp_path / "runs" / "tiny_density" / "last.pt").read_bytes()
    console = Console(record=True, width=200)
    tiny(dataset, console=console)
    assert "run folder runs/tiny_density-2" in console.export_text()
    assert (tmp_path / "runs" / "tiny_density" / "last.pt").read_bytes() == first

    tiny(dataset, resume=True, recipe={"epochs": 2})  # continues runs/tiny_density-2, the latest
    assert Checkpoint.load(tmp_path / "runs" / "tiny_density-2" / "last.pt").epoch == 2
    assert (tmp_path / "runs" / "tiny_density" / "last.pt").read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny_density", "tiny_density-2"]


def test_an_out_folder_holding_a_run_is_refused_and_kept(dataset, tmp_path, capsys):
    args = ["train", "tiny_density", "--data", str(dataset), "--amp", "off", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert str(tmp_path) in message and "--resume" in message and "--overwrite" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_overwrite_replaces_the_run_and_the_final_test_uses_only_its_own_checkpoint(dataset, tmp_path):
    assert tiny(dataset, tmp_path / "fresh", overwrite=True)["checkpoint"]  # no run there: it just proceeds
    out = tmp_path / "run"
    assert tiny(dataset, out)["checkpoint"] == str(out / "best.pt")
    without_val = write_shanghaitech(tmp_path / "no_val", {"train": 1, "test": 2}, seed=5)  # 1 image: none held out
    result = tiny(without_val, out, overwrite=True)
    assert result["checkpoint"] == str(out / "last.pt")
    assert not (out / "best.pt").exists()  # the earlier run's: gone, never tested nor left to be mistaken for this one
    assert Checkpoint.load(out / "last.pt").training["data"] == str(without_val)
    assert json.loads((out / "test_metrics.json").read_text())["images"] == 2


def test_resume_refuses_another_run_naming_both_settings(dataset, tmp_path):
    tiny(dataset, tmp_path)
    last = tmp_path / "last.pt"
    with pytest.raises(ZooError, match=rf"^{last}: cannot resume: .*recipe lr 0\.003.* 0\.01;"):
        tiny(dataset, tmp_path, resume=True, recipe={"lr": 0.01})
    with pytest.raises(ZooError, match=r"model_kwargs \{\}, this one asks for \{'width': 4\}"):
        tiny(dataset, tmp_path, resume=True, model_kwargs={"width": 4})
    other = write_shanghaitech(tmp_path / "other", {"train": 4, "test": 1}, seed=9)
    with pytest.raises(ZooError, match=rf"data '{dataset}', this one asks for '{other}'"):
        tiny(other, tmp_path, resume=True)
    assert Checkpoint.load(last).epoch == 1  # nothing was written by the refused runs
    tiny(dataset, tmp_path, resume=True, recipe={"epochs": 2})  # more epochs: the same run, continued
    assert Checkpoint.load(last).epoch == 2


def test_best_checkpoint_holds_what_inference_reads_and_last_the_training_state(dataset, tmp_path, capsys):
    result = tiny(dataset, tmp_path, model_kwargs={"width": 32})
    best, last = Checkpoint.load(tmp_path / "best.pt"), Checkpoint.load(tmp_path / "last.pt")
    resume_state = ("optimizer", "scaler", "torch_rng", "epoch", "step")
    assert all(getattr(last, key) is not None for key in resume_state)
    assert all(getattr(best, key) is None for key in resume_state)
    for key in ("model_name", "model_kwargs", "recipe", "training", "selection", "provenance"):
        assert getattr(best, key) == getattr(last, key)
    assert best.recipe["threshold"] == 0.3 and best.training["amp"] == "off"
    assert all(torch.equal(best.weights[k], last.weights[k]) for k in last.weights)
    # Adam keeps two moments per weight: the training state is about three times the weights.
    assert (tmp_path / "best.pt").stat().st_size < 0.45 * (tmp_path / "last.pt").stat().st_size

    expected = json.loads((tmp_path / "test_metrics.json").read_text())
    assert result["checkpoint"] == str(tmp_path / "best.pt")
    for checkpoint in ("best.pt", "last.pt"):  # last.pt: the full layout every checkpoint had before
        capsys.readouterr()
        assert main(["eval", "--weights", str(tmp_path / checkpoint), "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == expected
    tuned = tiny(dataset, tmp_path / "tuned", init_from=str(tmp_path / "best.pt"), model_kwargs={"width": 32},
                 recipe={"lr": 0.0, "backbone_lr": 0.0})
    started = Checkpoint.load(tuned["checkpoint"]).weights
    assert all(torch.equal(best.weights[k], started[k]) for k in started)


def test_resume_refuses_another_precision_or_device_type_naming_both(dataset, tmp_path):
    tiny(dataset, tmp_path)  # trained in float32 (--amp off) on the CPU
    last = tmp_path / "last.pt"
    with pytest.raises(ZooError, match=rf"^{last}: cannot resume: .*amp 'off', this one asks for 'bf16';"):
        tiny(dataset, tmp_path, resume=True, amp="bf16", recipe={"epochs": 2})
    on_gpu = Checkpoint.load(last)
    on_gpu.training["device"] = "cuda:1"  # as a run on a GPU records it
    on_gpu.save(last, for_inference=False)
    with pytest.raises(ZooError, match=r"device type 'cuda', this one asks for 'cpu';") as refused:
        tiny(dataset, tmp_path, resume=True, recipe={"epochs": 2})
    assert "\n" not in str(refused.value)
    assert Checkpoint.load(last).epoch == 1
