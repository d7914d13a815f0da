"""How long a newcomer waits: the README's two commands timed in a fresh clone, on this machine, as they are pasted.

    python -m benchmarks.fresh_clone [--out results/fresh_clone.csv] [--shared ../shared]

The checkout's committed HEAD is cloned into a temporary folder (with ../shared beside it, as CI lays it out), then
the set-up, the first training and the test suite run one after the other, exactly as README.md's first lines
give them. Each step appends a row: its seconds, its exit code and the machine's load average before and after,
so a run taken while something else loaded the machine shows it. The README's time table is generated from the
latest run's rows (benchmarks/documents.py). pip's download cache is not cleared: a first install on a new
machine also downloads torch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from zoo.core.csvrows import append_rows
from zoo.core.provenance import device_name, git_commit

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["run", "date", "git_commit", "device_name", "cpus", "step", "command", "seconds", "rc", "load_before",
           "load_after"]
#: the README's first two lines, split where a newcomer waits for a result
STEPS = (
    ("install", 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]"'),
    ("first training", ".venv/bin/zoo train csrnet"),
    ("tests", ".venv/bin/pytest -q"),
)


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The commands of the README's first code block, one per line."""
    text = readme.read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def steps_match_readme(readme: Path = ROOT / "README.md") -> bool:
    """Whether STEPS are the README's first lines (their -q aside), so the table times what the README says."""
    joined = " && ".join(command.replace(" -q ", " ").replace(" -q", "") for _, command in STEPS)
    return joined == " && ".join(readme_commands(readme))


def load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "fresh_clone.csv"))
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"), help="laid beside the clone, as in CI")
    args = parser.parse_args(argv)
    if not steps_match_readme():
        raise SystemExit("benchmarks/fresh_clone.py: STEPS no longer match README.md's first lines; update them")
    commit = git_commit(ROOT)
    run = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as scratch:
        clone = Path(scratch) / "main"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if Path(args.shared).is_dir():
            (Path(scratch) / "shared").symlink_to(Path(args.shared).resolve())
        env = {k: v for k, v in os.environ.items() if k not in ("ZOO_DATA", "VIRTUAL_ENV")}
        for step, command in STEPS:
            before, started = load(), time.perf_counter()
            done = subprocess.run(command, shell=True, cwd=clone, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - started
            row = {"run": run, "date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": commit,
                   "device_name": device_name(torch.device("cpu")), "cpus": os.cpu_count(), "step": step,
                   "command": command, "seconds": round(seconds, 1), "rc": done.returncode,
                   "load_before": round(before, 2), "load_after": round(load(), 2)}
            append_rows(Path(args.out), [row], COLUMNS, schema="fresh-clone",
                        remedy="move it aside to start a new file")
            print(f"{step}: {seconds:.0f} s, exit {done.returncode} ({shlex.quote(command)})")
            if done.returncode:
                print(done.stderr[-2000:])
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
