"""Crash safety without timing luck: writers that fail half-way, on purpose, at a known point.

A file replaced in place would be left truncated by such a writer; an atomic write leaves the previous version
whole, loadable, and no temporary file behind. New files get the mode any new file gets under the umask.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from zoo.core.errors import ZooError
from zoo.core.files import atomic_write
from zoo.models.weights.checkpoint import Checkpoint


class WriterFailed(RuntimeError):
    pass


def half_then_fail(payload: bytes, error: type[BaseException] = WriterFailed):
    """A writer that writes the first half of `payload`, flushes it to disk, and then fails."""
    def write(path):
        with open(path, "wb") as f:
            f.write(payload[: len(payload) // 2])
            f.flush()
            os.fsync(f.fileno())
        raise error("disk full (simulated)")
    return write


def state(value: float) -> Checkpoint:
    return Checkpoint(model_name="any", weights={"weight": torch.full((64, 64), value)}, epoch=int(value))


def checkpoint_bytes(value: float) -> bytes:
    buffer = io.BytesIO()
    torch.save(state(value).to_dict(for_inference=False), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("error", [WriterFailed, KeyboardInterrupt])
def test_a_writer_failing_half_way_keeps_the_previous_file(tmp_path, error):
    path = tmp_path / "run" / "last.pt"
    state(1.0).save(path, for_inference=False)
    before = path.read_bytes()
    with pytest.raises(error):
        atomic_write(path, half_then_fail(checkpoint_bytes(2.0), error))
    assert path.read_bytes() == before
    assert torch.equal(Checkpoint.load(path).weights["weight"], torch.full((64, 64), 1.0))
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary file left behind


def test_a_new_file_whose_writer_fails_is_not_created(tmp_path):
    with pytest.raises(WriterFailed):
        atomic_write(tmp_path / "metrics.csv", half_then_fail(b"epoch,loss\n1,0.5\n"))
    assert os.listdir(tmp_path) == []


def test_saving_a_checkpoint_goes_through_an_atomic_write(tmp_path, monkeypatch):
    """torch.save itself failing half-way (as on a full disk) must not cost the previous checkpoint."""
    path = tmp_path / "best.pt"
    state(1.0).save(path, for_inference=False)
    payload = checkpoint_bytes(2.0)

    def torch_save_half(obj, f, *args, **kwargs):
        half_then_fail(payload)(f)

    monkeypatch.setattr(torch, "save", torch_save_half)
    with pytest.raises(WriterFailed):
        state(2.0).save(path, for_inference=False)
    monkeypatch.undo()
    assert Checkpoint.load(path).epoch == 1
    assert os.listdir(tmp_path) == ["best.pt"]


def test_a_truncated_checkpoint_is_a_zoo_error_naming_the_file(tmp_path):
    """What an in-place write would have left: the loader must say so in one line, not unpickle garbage."""
    path = tmp_path / "last.pt"
    payload = checkpoint_bytes(1.0)
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ZooError, match=str(path)):
        Checkpoint.load(path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_written_files_get_the_mode_of_any_new_file(tmp_path, umask):
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write(tmp_path / "atomic.txt", lambda tmp: Path(tmp).write_text("x"))
        state(0.0).save(tmp_path / "model.pt", for_inference=True)
    finally:
        os.umask(previous)
    expected = plain.stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("atomic.txt", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name
