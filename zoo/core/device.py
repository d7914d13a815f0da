"""Which device a command runs on: the default, and the check that an asked-for device exists here."""

from __future__ import annotations

from zoo.core.errors import ZooError


def default_device() -> str:
    """CUDA where a GPU is visible, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | None = None):
    """The torch device `name` names (default: `default_device()`), refused in one line where it is absent."""
    import torch

    try:
        device = torch.device(name or default_device())
    except RuntimeError as exc:
        raise ZooError(f"--device {name}: not a device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"--device {name}: no CUDA device is available here")
    return device


def synchronize(device) -> None:
    """Wait for `device`'s queued work (CUDA runs asynchronously): before and after a timed call."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
