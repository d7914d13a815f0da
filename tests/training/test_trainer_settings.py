"""The recipe's schedule, freezing and clipping, observed at every optimizer step of a real `train` run (the tiny
test family), not read back from the recipe: a trainer that ignored any of them would still lower the loss."""

from __future__ import annotations

import io
import math
import os

import pytest
import torch
from rich.console import Console
from support import (
    tiny_family,  # noqa: F401  (registers tiny_density)
    write_shanghaitech,
)
from torch.optim.optimizer import register_optimizer_step_pre_hook

from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train

TRAIN_IMAGES, BATCH, EPOCHS, WARMUP_EPOCHS, FROZEN_EPOCHS = 8, 2, 4, 1, 1
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH
LR, BACKBONE_LR, CLIP = 3e-3, 1e-3, 1e-3  # a clip this small is below every raw gradient norm of this model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_shanghaitech(tmp_path_factory.mktemp("data"), {"train": TRAIN_IMAGES, "val": 2, "test": 2}, seed=5)


def expected_factor(step: int) -> float:
    """The documented schedule: linear warm-up from 10% over the warm-up epochs, then a half cosine to 1%."""
    warmup, total = WARMUP_EPOCHS * STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    return 0.01 + 0.99 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


@pytest.fixture(scope="module")
def observed(dataset, tmp_path_factory):
    """Per optimizer step: each parameter group's lr and whether it is the backbone, the gradient norm the
    step is about to apply, and the backbone weights before it."""
    steps = []

    def record(optimizer, args, kwargs):
        net = tiny_family.TinyDensity.instances[-1]
        backbone = {id(p) for p in net.backbone.parameters()}
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        steps.append({
            "lr": [(all(id(p) in backbone for p in g["params"]), g["lr"]) for g in optimizer.param_groups],
            "grad_norm": torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item(),
            "backbone": [p.detach().clone() for p in net.backbone.parameters()],
        })

    handle = register_optimizer_step_pre_hook(record)
    try:
        train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path_factory.mktemp("run")), amp="off",
                          recipe=dict(epochs=EPOCHS, batch_size=BATCH, warmup_epochs=WARMUP_EPOCHS, lr=LR,
                                      backbone_lr=BACKBONE_LR, freeze_backbone_epochs=FROZEN_EPOCHS,
                                      grad_clip=CLIP, flip=False)),
              console=Console(quiet=True))
    finally:
        handle.remove()
    final = [p.detach().clone() for p in tiny_family.TinyDensity.instances[-1].backbone.parameters()]
    return steps, final


def test_learning_rate_follows_warmup_then_cosine_with_the_backbone_factor(observed):
    steps, _ = observed
    assert len(steps) == EPOCHS * STEPS_PER_EPOCH
    for step, record in enumerate(steps):
        lrs = dict(record["lr"])  # {is_backbone: lr}
        assert lrs[False] == pytest.approx(LR * expected_factor(step), rel=1e-9), step
        frozen = step < FROZEN_EPOCHS * STEPS_PER_EPOCH
        assert lrs[True] == (0.0 if frozen else pytest.approx(BACKBONE_LR * expected_factor(step), rel=1e-9)), step
    head = [dict(r["lr"])[False] for r in steps]
    assert head[0] == pytest.approx(0.1 * LR) and max(head) == pytest.approx(LR)
    assert head[-1] < 0.05 * LR  # the cosine has nearly reached its 1% floor


def test_backbone_weights_stay_fixed_while_frozen_and_move_afterwards(observed):
    steps, final = observed
    first = steps[0]["backbone"]
    thawed = steps[FROZEN_EPOCHS * STEPS_PER_EPOCH]["backbone"]  # before the first step after the freeze
    assert all(torch.equal(a, b) for a, b in zip(first, thawed, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, final, strict=True))


def test_gradient_norm_at_the_optimizer_step_is_at_most_the_clip(observed):
    norms = [record["grad_norm"] for record in observed[0]]
    assert max(norms) <= CLIP * (1 + 1e-4)
    assert min(norms) > 0.5 * CLIP  # clipping engaged: the raw norms are all above CLIP


def test_a_checkpoint_write_failing_half_way_keeps_the_previous_epochs(dataset, tmp_path, monkeypatch):
    """However the trainer writes its checkpoints, one failing half-way through (a full disk, a kill) must leave
    last.pt of the epoch before, whole."""
    real_save = torch.save

    def save_failing_at_epoch_2(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            buffer = io.BytesIO()
            real_save(obj, buffer)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[: buffer.tell() // 2])
            raise OSError("No space left on device (simulated)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_failing_at_epoch_2)
    with pytest.raises(OSError, match="simulated"):
        train(TrainConfig("tiny_density", data=str(dataset), out=str(tmp_path), amp="off", recipe={"epochs": 3}),
              console=Console(quiet=True))
    monkeypatch.undo()
    assert Checkpoint.load(tmp_path / "last.pt").epoch == 1
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temporary file left
