"""`zoo train`'s flags reach the TrainConfig the trainer receives."""

from __future__ import annotations

import zoo.training.trainer as trainer
from zoo.cli import main


def test_checkpoint_every_sets_how_often_last_pt_is_written(monkeypatch):
    received = []
    monkeypatch.setattr(trainer, "train", lambda config, console=None: received.append(config) or {})
    assert main(["train", "csrnet", "--device", "cpu", "--checkpoint-every", "90"]) == 0
    assert main(["train", "csrnet", "--device", "cpu"]) == 0
    assert [config.checkpoint_seconds for config in received] == [90.0, 0.0]
