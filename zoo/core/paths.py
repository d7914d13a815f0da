"""Where generated data and caches live: `data/` under the working directory, or $ZOO_DATA."""

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("ZOO_DATA", "data"))


def cache_dir() -> Path:
    return data_dir() / "cache"
