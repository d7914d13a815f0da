"""Measuring a unit in a fresh Python process, so that its peak resident memory is the model's own.

Protocol: `python -m zoo.bench.worker UNIT_JSON ENTRY` prints the unit's row as JSON on its last stdout line, or
`{"zoo_error": message}` for a user error. ENTRY is the parent's registry entry of the model (pickled, base64):
the worker registers it when its own registry lacks the name, so a model registered at run time (a plugin, a
test) is measured too. The parent's `sys.path` is passed on so that the entry's builder can be imported.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys

from zoo.bench.config import Unit
from zoo.core.errors import ZooError
from zoo.models.registry import get_entry, list_models, register_model


def run_isolated(unit: Unit) -> dict:
    """The unit's row from a fresh worker process; a worker killed by the kernel is recorded as out of memory."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    entry = base64.b64encode(pickle.dumps(get_entry(unit.model))).decode()
    proc = subprocess.run([sys.executable, "-m", "zoo.bench.worker", json.dumps(unit.to_dict()), entry],
                          capture_output=True, text=True, env=env)
    if proc.returncode == -signal.SIGKILL:
        return {"status": "oom", "note": "the worker process was killed (SIGKILL): out of memory, most likely"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        return {"status": "error", "note": f"worker exited with {proc.returncode}: {tail[-1] if tail else ''}",
                "stderr": proc.stderr}
    row = json.loads(lines[-1])
    if "zoo_error" in row:
        raise ZooError(row["zoo_error"])
    return row


def main(argv: list[str]) -> int:
    from zoo.bench.measure import measure_unit

    unit = Unit.from_dict(json.loads(argv[0]))
    entry = pickle.loads(base64.b64decode(argv[1]))  # written by our own parent process, never read from disk
    if entry.name not in list_models():
        register_model(entry.name, recipe=entry.recipe, family=entry.family, description=entry.description)(
            entry.builder)
    try:
        row = measure_unit(unit)
    except ZooError as exc:
        row = {"zoo_error": str(exc)}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
