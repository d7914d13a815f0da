"""The registry: listing costs no torch import, and every family refuses an unknown option the same way."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.core.errors import ZooError
from zoo.models.factory import create_model
from zoo.models.registry import list_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["list"], ["--help"]])
def test_listing_and_help_import_no_torch_and_are_fast(argv):
    code = ("import sys, time; start = time.perf_counter(); from zoo.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, time.perf_counter() - start, file=sys.stderr)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    elapsed = time.perf_counter() - started
    torch_loaded, _ = done.stderr.strip().splitlines()[-1].split()
    assert torch_loaded == "False", done.stderr
    assert elapsed < 3.0  # about 0.4 s here; importing torch alone takes several seconds
    if argv == ["list"]:
        assert all(name in done.stdout for name in ("p2pnet", "csrnet_bn", "cpn_r18"))


@pytest.mark.parametrize("name", ["p2pnet", "csrnet", "csrnet_bn", "cpn", "cpn_r18"])
def test_every_family_refuses_a_misspelt_option_in_one_line(name):
    assert name in list_models()
    with pytest.raises(ZooError, match=rf"^{name}: unknown option\(s\) backbon; known: .*"):
        create_model(name, backbon="x")
