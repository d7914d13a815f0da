"""The shared trainer, on a tiny test-only family (tests/support/tiny_family.py) so it runs in seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from support import (
    tiny_family,  # noqa: F401  (registers tiny_density)
    write_shanghaitech,
)

from zoo.core.errors import ZooError
from zoo.data.dataset import PointDataset, resolve_splits
from zoo.inference.evaluate import evaluate
from zoo.inference.predict import load_inference
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_shanghaitech(tmp_path_factory.mktemp("data"), {"train": 8, "val": 4, "test": 4}, seed=3)


def run_cli(*args, check=True):
    """`zoo` in a fresh process that also knows the tiny family."""
    code = "import sys, support.tiny_family; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, check=check)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(path).weights


def test_training_lowers_the_loss_and_writes_metrics(dataset, tmp_path):
    result = train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                               recipe={"epochs": 6}))
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert history["train_loss"].iloc[-1] < 0.7 * history["train_loss"].iloc[0]
    assert {"val_mae", "val_mse", "val_f1_4", "val_f1_8", "train_mse", "lr"} <= set(history.columns)
    assert set(result) >= {"mae", "mse", "f1_4", "f1_8", "epochs", "checkpoint"}
    assert json.loads((tmp_path / "test_metrics.json").read_text())["mae"] == result["mae"]
    assert Checkpoint.load(tmp_path / "last.pt").epoch == 6


def test_the_threshold_is_chosen_on_validation_and_decodes_the_checkpoint(dataset, tmp_path, monkeypatch):
    counted_decode = tiny_family.TinyDensity.decode

    def count_cells_above(self, outputs, sizes, threshold):  # a count that depends on the threshold, as P2PNet's
        return [replace(p, count=float(len(p.points))) for p in counted_decode(self, outputs, sizes, threshold)]

    monkeypatch.setattr(tiny_family.TinyDensity, "decode", count_cells_above)
    candidates = (0.02, 0.1, 0.3, 0.6, 5.0)
    result = train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                               recipe={"epochs": 4, "threshold_candidates": candidates}))
    best = Checkpoint.load(tmp_path / "best.pt")
    run = load_inference(tmp_path / "best.pt", fold_bn=False)
    splits = resolve_splits(str(dataset))
    # Each candidate scored on its own forward pass: the recorded one has the lowest validation MAE.
    val = {t: evaluate(run.model, splits.val, "val", threshold=t).summary()["mae"] for t in candidates}
    assert best.threshold == run.threshold == min(candidates, key=val.get)
    assert len(set(val.values())) > 1  # the choice mattered
    assert best.threshold in set(pd.read_csv(tmp_path / "metrics.csv")["val_threshold"])
    assert result["mae"] == pytest.approx(
        evaluate(run.model, splits.test, "test", threshold=best.threshold).summary()["mae"])


def test_the_count_scale_is_fitted_on_validation_and_decodes_the_checkpoint(dataset, tmp_path):
    result = train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                               recipe={"epochs": 3, "fit_count_scale": True}))
    best = Checkpoint.load(tmp_path / "best.pt")
    run = load_inference(tmp_path / "best.pt", fold_bn=False)
    assert run.model.count_scale == best.count_scale
    splits = resolve_splits(str(dataset))
    # Reference: the ratio of true to predicted validation counts of the same weights at scale 1.
    run.model.count_scale = 1.0
    unscaled = pd.DataFrame(evaluate(run.model, splits.val, "val", threshold=0.3).rows())
    expected = unscaled["gt_count"].sum() / unscaled["pred_count"].sum()
    assert best.count_scale == pytest.approx(expected, rel=1e-6)
    assert abs(expected - 1) > 0.01  # the fit mattered
    unscaled_test = evaluate(run.model, splits.test, "test", threshold=0.3).summary()["mae"]
    run.model.count_scale = expected
    assert result["mae"] == pytest.approx(evaluate(run.model, splits.test, "test", threshold=0.3).summary()["mae"])
    assert result["mae"] != pytest.approx(unscaled_test)
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert best.count_scale in set(history["val_count_scale"])


def test_the_logged_validation_score_is_the_one_zoo_eval_reproduces(dataset, tmp_path):
    """Under bf16 a graph with batch norm folded counts differently from the unfolded one; validation must score
    the graph evaluation runs, or the checkpoint is chosen on numbers nobody can reproduce."""
    train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="bf16", channels_last=True,
                      model_kwargs={"batch_norm": True}, recipe={"epochs": 3}))
    best = Checkpoint.load(tmp_path / "best.pt")
    logged = pd.read_csv(tmp_path / "metrics.csv").set_index("epoch").loc[best.selection.epoch, "val_mae"]
    run = load_inference(tmp_path / "best.pt")  # folded, bf16, channels_last: as the checkpoint records
    splits = resolve_splits(str(dataset))
    scored = evaluate(run.model, splits.val, "val", threshold=run.threshold, amp=run.amp,
                      channels_last=run.channels_last).summary()["mae"]
    assert run.amp == "bf16" and run.channels_last
    assert scored == pytest.approx(logged, rel=1e-9, abs=1e-9)


def test_fitting_a_count_scale_needs_a_count_that_is_a_sum(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_family.TinyDensity, "count_is_sum", False)
    with pytest.raises(ZooError, match="fit_count_scale needs a count that is a map's sum"):
        train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path / "run"), amp="off",
                          recipe={"epochs": 1, "fit_count_scale": True}))
    assert not (tmp_path / "run").exists()  # refused before a run folder is claimed


def test_batch_norm_recalibration_recomputes_the_statistics_validation_uses(dataset, tmp_path):
    train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                      model_kwargs={"batch_norm": True},
                      recipe={"epochs": 2, "bn_recalibration": 3, "flip": False, "color_jitter": 0.0,
                              "scale_range": (1.0, 1.0)}))
    state = Checkpoint.load(tmp_path / "last.pt")
    net = tiny_family.TinyDensity(batch_norm=True)
    net.load_state_dict(state.weights)
    # Reference: the first convolution's outputs over the crops the last epoch's recalibration drew, pooled.
    crops = PointDataset(resolve_splits(str(dataset)).train, "t", stride=4, train=True, crop_size=32,
                         crops_per_image=3, scale_range=(1.0, 1.0), seed=0)
    crops.set_epoch(1)
    with torch.no_grad():
        features = torch.cat([net.backbone[0](item["image"][None]) for i in range(len(crops)) for item in crops[i]])
    norm = state.weights
    torch.testing.assert_close(norm["backbone.1.running_mean"], features.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm["backbone.1.running_var"], features.var((0, 2, 3)), rtol=2e-2, atol=1e-5)


def test_best_checkpoint_is_chosen_on_validation_never_on_test(dataset, tmp_path):
    other_test = write_shanghaitech(tmp_path / "other", {"train": 8, "val": 4, "test": 4}, seed=3)
    # Same train and val images, a different test split: nothing but the final test report may change.
    write_shanghaitech(other_test, {"test": 4}, seed=99, counts=(20, 30))
    runs = []
    for data, out in ((dataset, tmp_path / "a"), (other_test, tmp_path / "b")):
        result = train(TrainConfig("tiny_density", data=str(data), out=str(out), amp="off", recipe={"epochs": 5}))
        runs.append((result, pd.read_csv(out / "metrics.csv"), weights(out / "best.pt")))
    (res_a, hist_a, best_a), (res_b, hist_b, best_b) = runs
    pd.testing.assert_frame_equal(hist_a.drop(columns="train_images_per_s"), hist_b.drop(columns="train_images_per_s"))
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert res_a["mae"] != res_b["mae"]
    best_epoch = int(hist_a.loc[hist_a["val_mae"].idxmin(), "epoch"])
    best = Checkpoint.load(tmp_path / "a" / "best.pt")
    assert best.selection.epoch == best.training["epochs"] == best_epoch
    assert best.selection.best == pytest.approx(hist_a["val_mae"].min())


def test_kill_9_then_resume_reaches_the_same_weights(dataset, tmp_path):
    args = ["train", "tiny_density", "--data", str(dataset), "--amp", "off", "--epochs", "8"]
    run_cli(*args, "--out", str(tmp_path / "clean"))

    code = "import sys, support.tiny_family; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    victim = subprocess.Popen([sys.executable, "-c", code, *args, "--out", str(tmp_path / "killed")], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (last.is_file() and Checkpoint.load(last).epoch >= 3):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = Checkpoint.load(last).epoch
    assert killed_at < 8, "the run finished before it could be killed"

    resumed = run_cli(*args, "--out", str(tmp_path / "killed"), "--resume")
    assert f"resumed from {last} after epoch {killed_at}" in resumed.stdout.replace("\n", "")
    clean, again = weights(tmp_path / "clean" / "last.pt"), weights(last)
    assert all(torch.equal(clean[k], again[k]) for k in clean)


def test_last_pt_is_written_at_most_as_often_as_asked_and_after_the_last_epoch(dataset, tmp_path, monkeypatch):
    written = []
    real_save = Checkpoint.save

    def recording_save(checkpoint, path, *, for_inference):
        if Path(path).name == "last.pt" and checkpoint.resumable:  # the final test rewrites best.pt, not this
            written.append((Path(path).parent.name, checkpoint.epoch))
        real_save(checkpoint, path, for_inference=for_inference)

    monkeypatch.setattr(Checkpoint, "save", recording_save)
    config = dict(data=str(dataset), amp="off", recipe={"epochs": 3})
    train(TrainConfig("tiny_density", out=str(tmp_path / "every"), **config))
    train(TrainConfig("tiny_density", out=str(tmp_path / "hourly"), checkpoint_seconds=3600, **config))
    assert written == [("every", 1), ("every", 2), ("every", 3), ("hourly", 3)]
    # What a run learns does not depend on how often it saved.
    every, hourly = (Checkpoint.load(tmp_path / run / "last.pt") for run in ("every", "hourly"))
    assert all(torch.equal(every.weights[k], hourly.weights[k]) for k in every.weights)
    history = pd.read_csv(tmp_path / "hourly" / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3]  # the history is still written every epoch


def test_the_moving_average_of_the_weights_is_what_the_checkpoint_keeps(dataset, tmp_path, monkeypatch):
    import zoo.training.trainer as trainer

    after_each_step, decay = [], 0.8
    real_step = trainer.optimizer_step

    def recording_step(loss, net, *args):
        real_step(loss, net, *args)
        after_each_step.append({k: p.detach().clone() for k, p in net.named_parameters()})

    monkeypatch.setattr(trainer, "optimizer_step", recording_step)
    train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                      recipe={"epochs": 3, "ema_decay": decay}))
    # Reference: the average of every step's weights, computed here
    average = dict(after_each_step[0])
    for weights_now in after_each_step[1:]:
        average = {k: decay * average[k] + (1 - decay) * w for k, w in weights_now.items()}
    state = Checkpoint.load(tmp_path / "last.pt")
    assert len(after_each_step) > 3
    for k, expected in average.items():
        torch.testing.assert_close(state.weights[k], expected)
        assert torch.equal(state.trained[k], after_each_step[-1][k])
    assert any(not torch.equal(state.weights[k], state.trained[k]) for k in average)


def test_a_run_with_a_moving_average_resumes_where_it_stopped(dataset, tmp_path, monkeypatch):
    config = dict(data=str(dataset), amp="off", recipe={"epochs": 4, "ema_decay": 0.8})
    train(TrainConfig("tiny_density", out=str(tmp_path / "clean"), **config))
    real_save = Checkpoint.save

    def save_then_stop(checkpoint, path, *, for_inference):
        real_save(checkpoint, path, for_inference=for_inference)
        if Path(path).name == "last.pt" and checkpoint.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig("tiny_density", out=str(tmp_path / "stopped"), **config))
    monkeypatch.setattr(Checkpoint, "save", real_save)
    train(TrainConfig("tiny_density", out=str(tmp_path / "stopped"), resume=True, **config))
    clean, resumed = (Checkpoint.load(tmp_path / run / "last.pt") for run in ("clean", "stopped"))
    for key in ("weights", "trained"):
        ours, theirs = getattr(clean, key), getattr(resumed, key)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_an_ema_decay_outside_0_to_1_is_refused(dataset, tmp_path):
    with pytest.raises(ZooError, match="ema_decay must be in"):
        train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                          recipe={"epochs": 1, "ema_decay": 1.0}))


def test_non_finite_loss_stops_with_the_step_and_term_and_keeps_the_checkpoint(dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = tiny_family.TinyDensity.loss

    def poisoned(self, outputs, batch):
        calls["n"] += 1
        loss, parts = original(self, outputs, batch)
        if calls["n"] == 5:  # epoch 3, step 4 with 2 steps per epoch
            parts = {"mse": torch.tensor(float("nan"))}
            loss = loss * float("nan")
        return loss, parts

    monkeypatch.setattr(tiny_family.TinyDensity, "loss", poisoned)
    with pytest.raises(ZooError, match=r"non-finite loss at epoch 3 step 4: mse=nan"):
        train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off", recipe={"epochs": 6}))
    kept = Checkpoint.load(tmp_path / "last.pt")
    assert kept.epoch == 2
    assert all(torch.isfinite(v).all() for v in kept.weights.values() if v.is_floating_point())


def test_truncated_checkpoint_is_a_clear_error(dataset, tmp_path):
    run_cli("train", "tiny_density", "--data", str(dataset), "--amp", "off", "--epochs", "1", "--out", str(tmp_path))
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(ZooError, match="unreadable checkpoint"):
        Checkpoint.load(last)
    proc = run_cli("train", "tiny_density", "--data", str(dataset), "--epochs", "2", "--out", str(tmp_path),
                   "--resume", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{last}: unreadable checkpoint" in proc.stderr.replace("\n", "")


def test_json_flag_prints_the_final_metrics_last(dataset, tmp_path):
    proc = run_cli("train", "tiny_density", "--data", str(dataset), "--amp", "bf16", "--epochs", "1",
                   "--out", str(tmp_path), "--json")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"mae", "mse", "f1_4", "f1_8", "epochs", "checkpoint"} <= set(result)
    assert result["epochs"] == 1


def test_early_stop_ends_the_run_after_that_many_validations_without_improvement(dataset, tmp_path):
    # Weights that never move validate the same every epoch: only the first validation improves.
    frozen = {"lr": 0.0, "backbone_lr": 0.0, "early_stop": 2}
    result = train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off",
                               recipe={"epochs": 6, **frozen}))
    assert list(pd.read_csv(tmp_path / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert result["epochs"] == 3 and result["checkpoint"] == str(tmp_path / "best.pt")
    assert Checkpoint.load(tmp_path / "best.pt").selection.epoch == 1
    assert Checkpoint.load(tmp_path / "last.pt").epoch == 3
    # Resumed, it stays stopped, as the uninterrupted run did.
    train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off", resume=True,
                      recipe={"epochs": 8, **frozen}))
    assert Checkpoint.load(tmp_path / "last.pt").epoch == 3


@pytest.mark.parametrize("metric, values, waited", [
    ("mae", [5.0, 4.0, 4.0, 4.5], 2),  # equal is no improvement
    ("mae", [5.0, 6.0, 3.0], 0),  # an improvement starts the count again
    ("ap", [0.2, 0.1, 0.3, 0.3], 1),  # AP: higher is better
    ("ap", [], 0),
])
def test_early_stop_counts_validations_since_the_best_in_the_metrics_direction(metric, values, waited):
    from types import SimpleNamespace

    from zoo.models.weights.checkpoint import Selection
    from zoo.training.hooks import EarlyStop

    history = [{"epoch": 1}] + [{"epoch": k + 2, f"val_{metric}": v} for k, v in enumerate(values)]
    assert EarlyStop(2).waited(SimpleNamespace(history=history, selection=Selection(metric))) == waited


def test_the_config_is_kept_as_given_and_the_checkpoint_records_what_it_resolved_to(dataset, tmp_path):
    config = TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="auto", recipe={"epochs": 1})
    train(config)
    assert config.amp == "auto" and config.model_kwargs == {}
    training = Checkpoint.load(tmp_path / "last.pt").training
    assert training["amp"] in ("bf16", "off") and training["config"]["amp"] == "auto"
    assert (training["device"], training["world_size"], training["epochs"]) == ("cpu", 1, 1)
    with pytest.raises(AttributeError):
        config.amp = "off"


DDP_ENTRY = """
import sys, torch, torch.distributed as dist
from support import tiny_family
from zoo.training.trainer import TrainConfig, train
out = sys.argv[2]
train(TrainConfig("tiny_density", data=sys.argv[1], out=out, amp="off", recipe={"epochs": 3}))
rank = dist.get_rank() if dist.is_initialized() else 0
torch.save(tiny_family.TinyDensity.instances[0].state_dict(), f"{out}/rank{rank}.pt")
"""


def test_torchrun_two_processes_match_single_process_training(dataset, tmp_path):
    entry = tmp_path / "entry.py"
    entry.write_text(DDP_ENTRY)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    subprocess.run([*torchrun, str(entry), str(dataset), str(tmp_path / "ddp")], env=ENV, check=True,
                   capture_output=True, timeout=300)
    subprocess.run([sys.executable, str(entry), str(dataset), str(tmp_path / "single")], env=ENV, check=True,
                   capture_output=True, timeout=300)
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    for key in single:
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5)
