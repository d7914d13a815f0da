"""Where generated data and caches live: `data/` under the working directory, or $ZOO_DATA; compiled models in the
user's cache folder."""

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("ZOO_DATA", "data"))


def cache_dir() -> Path:
    return data_dir() / "cache"


def inductor_cache_dir() -> Path:
    """Where torch.compile keeps what it compiled between runs (TorchInductor's caches: compiled kernels, and graphs
    where freezing does not bypass them, zoo.deploy.compiled): $TORCHINDUCTOR_CACHE_DIR when set (inductor's own
    variable), else crowd-zoo/inductor in the user's cache folder ($XDG_CACHE_HOME, default ~/.cache). Not under
    data/: a compiled graph belongs to the machine, not the dataset."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crowd-zoo" / "inductor"
