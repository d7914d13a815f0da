"""What a `--data` name stands for: `synthetic` (generated on first use), `cells` (the VGG cells set), or a path."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.core.errors import ZooError

# Where `--data cells` looks: the VGG cells set staged beside the checkout, or $ZOO_CELLS.
CELLS_DIR = Path(os.environ.get("ZOO_CELLS",
                                Path(__file__).resolve().parents[2].parent / "shared/assets/cells_vgg/cells"))


def dataset_path(spec: str | os.PathLike | None) -> Path:
    """The folder or file `--data SPEC` reads (None: synthetic)."""
    spec = "synthetic" if spec is None else str(spec)
    if spec == "synthetic":
        from zoo.data.synthetic import ensure_synthetic

        return ensure_synthetic()
    if spec == "cells":
        if not CELLS_DIR.is_dir():
            raise ZooError(f"{CELLS_DIR}: VGG cells not found; set ZOO_CELLS or pass the folder with --data")
        return CELLS_DIR
    return Path(spec)
