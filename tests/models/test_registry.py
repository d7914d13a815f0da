"""The registry: listing imports no torch, and every family refuses an unknown option the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zoo.core.errors import ZooError
from zoo.models.factory import create_model
from zoo.models.registry import list_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [["list"], ["--help"]])
def test_listing_and_help_import_no_torch(argv):
    code = ("import sys; from zoo.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    torch_loaded = done.stderr.strip().splitlines()[-1]
    assert torch_loaded == "False", done.stderr
    if argv == ["list"]:
        assert all(name in done.stdout for name in ("p2pnet", "csrnet_bn", "cpn_r18"))


@pytest.mark.parametrize("name", ["p2pnet", "csrnet", "csrnet_bn", "cpn", "cpn_r18"])
def test_every_family_refuses_a_misspelt_option_in_one_line(name):
    assert name in list_models()
    with pytest.raises(ZooError, match=rf"^{name}: unknown option\(s\) backbon; known: .*"):
        create_model(name, backbon="x")
