"""Files the zoo writes and reads: atomically written, safely loaded, identified by their sha256.

Every module that writes a result, a checkpoint or an export goes through `atomic_write`; every torch file is read
through `read_torch`, which unpickles nothing but tensors and plain values unless the caller trusts the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from zoo.core.errors import ZooError


def atomic_write(path: Path | str, write) -> None:
    """Call `write(tmp_path)` then rename over `path`: a crash or a full disk never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results should be as readable as any new file
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_torch(path: Path | str, trust_pickle: bool = False, what: str = "checkpoint"):
    """The contents of a torch file, on CPU. Without `trust_pickle` only tensors and plain Python values are
    unpickled (`weights_only=True`), so a file cannot run code while loading."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # truncated, corrupt, not a torch file, or holding pickled objects
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if pickled:
            raise ZooError(f"{path}: holds pickled Python objects ({pickled[1]}) besides tensors; load it only if "
                           "you trust its source (--trust-pickle, or trust_pickle=True)") from None
        raise ZooError(f"{path}: unreadable {what} ({type(exc).__name__}: {first})") from None
