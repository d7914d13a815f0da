"""Where a number came from: the code's commit, the machine (CPU model and the instructions its kernels use, or the
GPU), the library versions and threads. Training runs, benchmark rows and comparison rows all record these."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch

# Uncommitted changes here do not make a row "+dirty": results/ holds the rows being written, and documentation
# cannot change a number.
NOT_CODE = (":(exclude)results", ":(exclude)docs", ":(exclude,glob)**/*.md")
CHECKOUT = Path(__file__).resolve().parents[2]

def environment(device: torch.device) -> dict:
    import timm
    import torchvision

    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
            "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "cpu_threads": torch.get_num_threads()}



def git_commit(root: Path = CHECKOUT) -> str:
    """Short commit of the checkout at `root` (the one this package runs from), "+dirty" with uncommitted changes
    to its code; "unknown" outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")



def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with the instructions its kernels use (CPUs of one name differ in them, and
    bf16 and int8 speed depends on them), e.g. "AMD EPYC (AVX512, BF16, VNNI)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    found = cpu_instructions()
    extras = [label for key, label in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI"), ("amx", "AMX"))
              if found[key]]
    return f"{cpu_model()} ({', '.join([torch.backends.cpu.get_cpu_capability(), *extras])})"


def cpu_instructions() -> dict[str, bool]:
    """Which x86 instruction sets of those that decide fp32, bf16 and int8 product speed this CPU has, as torch
    detects them from the CPU's flags (its kernels dispatch on the same detection)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return {"avx2": capability in ("AVX2", "AVX512"), "avx512": capability == "AVX512",
            "avx512_vnni": torch.cpu._is_vnni_supported(), "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
            "amx": torch.cpu._is_amx_tile_supported()}



def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
