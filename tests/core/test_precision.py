"""bf16 autocast on an x86 CPU without bf16 instructions runs many times slower than float32 (results/README.md):
the trainer and the commands that run a model say so once, and nowhere else, and training's default precision
("auto") is float32 there and bf16 elsewhere."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from support import (
    tiny_family,  # noqa: F401  (registers tiny_density)
    write_shanghaitech,
)

from zoo.core.precision import resolve_amp, slow_amp_note
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.trainer import TrainConfig, train


def cpu(monkeypatch, *, machine="x86_64", avx512_bf16=False, amx=False):
    monkeypatch.setattr("platform.machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_bf16_on_an_x86_cpu_without_bf16_instructions_is_noted(monkeypatch):
    cpu(monkeypatch)
    note = slow_amp_note("cpu", "bf16")
    assert note and "--amp off" in note


@pytest.mark.parametrize("device, amp, flags", [
    ("cpu", "bf16", dict(avx512_bf16=True)),
    ("cpu", "bf16", dict(amx=True)),
    ("cpu", "bf16", dict(machine="aarch64")),  # what such a CPU has is not read here: no claim either way
    ("cpu", "off", {}),
    ("cuda", "bf16", {}),
])
def test_no_note_where_bf16_has_instructions_or_is_not_asked_for(monkeypatch, device, amp, flags):
    cpu(monkeypatch, **flags)
    assert slow_amp_note(device, amp) is None


@pytest.mark.parametrize("avx512_bf16, amp, trained_in, warnings", [
    (False, "bf16", "bf16", 1),  # asked for: trained as asked, with the warning
    (True, "bf16", "bf16", 0),
    (False, None, "off", 0),  # the default
    (True, None, "bf16", 0),
])
def test_training_in_bf16_on_a_cpu_without_it_only_when_asked_and_then_with_a_warning(
        monkeypatch, tmp_path, avx512_bf16, amp, trained_in, warnings):
    cpu(monkeypatch, avx512_bf16=avx512_bf16)
    data = write_shanghaitech(tmp_path / "data", {"train": 2, "val": 1, "test": 1}, seed=3)
    out = io.StringIO()
    train(TrainConfig("tiny_density", data=str(data), out=str(tmp_path / "run"), recipe=dict(epochs=1, batch_size=2),
                      **({"amp": amp} if amp else {})),
          console=Console(file=out, width=200))
    assert out.getvalue().count("no bf16 instructions") == warnings
    assert Checkpoint.load(tmp_path / "run" / "last.pt").training["amp"] == trained_in


def test_auto_is_the_only_setting_resolved(monkeypatch):
    cpu(monkeypatch)
    assert [resolve_amp(amp, "cpu") for amp in ("auto", "bf16", "off")] == ["off", "bf16", "off"]
    assert resolve_amp("auto", "cuda") == "bf16"
