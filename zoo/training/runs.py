"""Run folders: where `zoo train` writes, so that a new run never replaces an earlier one.

- No `--out`: the run gets `runs/MODEL`, or when that exists the next numbered folder (`runs/MODEL-2`,
  `runs/MODEL-3`, ...), created on the spot so two runs started together never share one. With `--resume` it
  continues the latest of them (the highest number, the one started last); with `--overwrite` it replaces
  `runs/MODEL`.
- An explicit `--out` that already holds a run (best.pt, last.pt or metrics.csv) is refused unless `--resume`
  continues it or `--overwrite` replaces it (the earlier run's files are deleted first, so nothing of it can be
  mistaken for the new run's). A folder without a run is used as it is.
- `--resume` continues only the same run: another model, model options, data, format, seed, precision (--amp, as
  resolved), device type or a recipe that changes what the saved weights and optimizer state mean is refused (the
  epoch count, the validation interval, early stopping and the decision threshold may change).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.models.weights.checkpoint import Checkpoint
from zoo.training.config import ResolvedRun

RUN_FILES = ("best.pt", "last.pt", "metrics.csv")  # a folder holding any of them holds a run
OUTPUT_FILES = (*RUN_FILES, "test_metrics.json", "test_predictions.csv")
# recipe fields a resumed run may change
RESUMABLE_CHANGES = {"epochs", "eval_every", "threshold", "test_views", "early_stop"}
RUN_SETTINGS = ("data", "format", "seed", "amp")  # recorded training settings a resumed run must keep


def earlier_run(folder: Path) -> list[str]:
    return [name for name in RUN_FILES if (folder / name).is_file()]


def numbered_folders(root: Path, model: str) -> list[tuple[int, Path]]:
    """The existing `root/MODEL` (number 1), `root/MODEL-2`, ... in the order they were numbered."""
    pattern = re.compile(rf"{re.escape(model)}(?:-([1-9]\d*))?")
    found = []
    for folder in root.iterdir() if root.is_dir() else ():
        match = pattern.fullmatch(folder.name)
        if match and folder.is_dir():
            found.append((int(match.group(1) or 1), folder))
    return sorted(found)


def next_folder(root: Path, model: str) -> Path:
    """Create and return the folder numbered after the highest existing one (not a gap a deleted run left, so the
    highest number stays the latest run)."""
    numbered = numbered_folders(root, model)
    number = numbered[-1][0] if numbered else 0
    while True:
        number += 1
        folder = root / (model if number == 1 else f"{model}-{number}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:  # another run took it a moment ago
            continue


def run_folder(model: str, out: str | None, *, resume: bool, overwrite: bool, root: Path = Path("runs")) -> Path:
    """The folder this run writes to (see the module's docstring)."""
    if resume and overwrite:
        raise ZooError("--resume continues the run in the folder and --overwrite replaces it: choose one")
    if out is None:
        numbered = numbered_folders(root, model)
        if resume and numbered:
            return numbered[-1][1]
        if not (resume or overwrite):
            return next_folder(root, model)
        out = root / model
    out = Path(out)
    found = earlier_run(out)
    if found and not (resume or overwrite):
        raise ZooError(f"{out}: holds an earlier run ({', '.join(found)}); pass --resume to continue it or "
                       "--overwrite to replace it")
    if found and resume and "last.pt" not in found:
        raise ZooError(f"{out}: holds an earlier run ({', '.join(found)}) but no last.pt to resume from; "
                       "pass --overwrite to replace it")
    if overwrite:
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    return out


def check_same_run(saved: Checkpoint, resolved: ResolvedRun, path: Path) -> None:
    """Refuse to resume `saved` (a run's last.pt) when its run differs from `resolved`, naming both settings:
    another data, format, seed, model options, precision, device type or a recipe field outside
    RESUMABLE_CHANGES.

    Another model is left to the weight loader, which names both models; checkpoints without a record pass."""
    recorded = saved.training
    if not recorded or saved.model_name != resolved.model:
        return
    now = resolved.training()
    # Settings a checkpoint does not record (written before they existed) cannot be compared: they pass.
    pairs = [(key, recorded[key], now[key]) for key in RUN_SETTINGS if key in recorded]
    pairs.append(("model_kwargs", saved.model_kwargs, dict(resolved.model_kwargs)))
    if recorded.get("device"):
        pairs.append(("device type", device_type(recorded["device"]), resolved.device.type))
    pairs += [(f"recipe {key}", saved.recipe[key], value) for key, value in asdict(resolved.recipe).items()
              if key not in RESUMABLE_CHANGES and key in saved.recipe]
    for name, before, asked in pairs:
        if name == "data" and Path(before).resolve() == Path(asked).resolve():  # the same folder spelt otherwise
            continue
        if before != asked:
            raise ZooError(f"{path}: cannot resume: the run was trained with {name} {before!r}, this one asks "
                           f"for {asked!r}; start a new run (another --out) or pass --overwrite")


def device_type(device: str) -> str:
    """"cuda" of "cuda:1": what a run's numbers depend on (which GPU of a kind does not matter)."""
    return str(device).partition(":")[0]
