"""The machine while a benchmark measures it: the 1-minute load average and the other processes that kept the
cores busy. Speed rows record both, so that a row timed while other work held the cores can be told apart."""

from __future__ import annotations

import os
import time
from pathlib import Path


def load_1m() -> float:
    return os.getloadavg()[0]


def is_loaded(load: float, threads: int) -> bool:
    """More runnable work than the benchmark's threads: something else competed for the cores."""
    return load > threads


def cpu_ticks() -> dict[int, tuple[str, int, int]]:
    """pid -> (name, parent pid, user + system clock ticks so far) of every process /proc lists."""
    found = {}
    for folder in Path("/proc").iterdir():
        if not folder.name.isdigit():
            continue
        try:
            stat = (folder / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # the name is in parentheses and may hold spaces; the fields after it are numbered from the state on
        name, fields = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        found[int(folder.name)] = (name, int(fields[1]), int(fields[11]) + int(fields[12]))
    return found


def busy_processes(interval: float = 0.5, top: int = 3) -> str:
    """The `top` other processes that used the most CPU over `interval` seconds, as `name[pid] cores`; this
    process and its children (compile workers) left out. Empty where /proc is absent."""
    if not Path("/proc/self/stat").is_file():
        return ""
    before = cpu_ticks()
    time.sleep(interval)
    after = cpu_ticks()
    ours, hz = os.getpid(), os.sysconf("SC_CLK_TCK")
    used = sorted(((after[p][2] - before[p][2]) / hz / interval, p) for p in after
                  if p in before and p != ours and after[p][1] != ours)
    return "; ".join(f"{after[p][0]}[{p}] {cores:.2f}" for cores, p in reversed(used[-top:]) if cores >= 0.05)
