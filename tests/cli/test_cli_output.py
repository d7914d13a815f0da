"""What the `zoo` command prints and imports, run as a user would: in a fresh process with stdout piped (a log
file, CI, `tee`), where rich sees no terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from support import write_shanghaitech

from zoo.metrics.names import label

TESTS = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")},
       "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def test_epoch_lines_stay_one_line_each_without_a_terminal(tmp_path):
    data = write_shanghaitech(tmp_path / "data", {"train": 8, "val": 4, "test": 4}, seed=3)
    out = tmp_path / "run"
    code = "import sys, support.tiny_family; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "train", "tiny_density", "--data", str(data), "--out",
                           str(out), "--epochs", "3", "--amp", "off", "--device", "cpu"],
                          env=ENV, capture_output=True, text=True, timeout=300, check=True)
    lines = done.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(f"val {label('mae')}" in line and label("f1_8") in line for line in epochs)
    # The marker stays on its epoch's line, past the 80 columns rich assumes without a terminal.
    history = pd.read_csv(out / "metrics.csv")
    improved = history["val_mae"] < history["val_mae"].cummin().shift(fill_value=float("inf"))
    assert [line.endswith(" (best)") for line in epochs] == improved.tolist()
    assert max(len(line) for line in epochs) > 80
    assert not any(line.strip() == "(best)" for line in lines)
    assert [line for line in lines if line.startswith("test (")][0].endswith(tuple("0123456789"))
    assert "━" not in done.stdout + done.stderr  # no progress bar drawn into the log
    assert f"zoo eval --weights {out / 'best.pt'}\n" in done.stdout  # the next command, ready to copy


HEAVY = ("torch", "torchvision", "timm")


def heavy_imports_of(*argv: str) -> str:
    """The heavy packages a fresh process has imported after running `zoo ARGV` (help exits via SystemExit)."""
    code = ("import sys\nfrom zoo.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(set({HEAVY!r}) & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, *argv], env=ENV, capture_output=True, text=True, timeout=120,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def test_help_and_data_check_do_not_import_torch(tmp_path):
    data = write_shanghaitech(tmp_path / "data", {"train": 2, "test": 1}, seed=0)
    assert heavy_imports_of("--help") == "[]"
    assert heavy_imports_of("predict", "--help") == "[]"
    assert heavy_imports_of("data", "check", str(data)) == "[]"
    assert heavy_imports_of("data", "check", str(data), "--json") == "[]"
