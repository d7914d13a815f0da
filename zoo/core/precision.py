"""Numeric precision: the words the zoo uses for it and the one autocast context every forward pass runs under.

Training, evaluation and prediction speak of autocast modes (`--amp`); the benchmark speaks of numeric types
(`--dtype`), which map onto those modes. Importing this module costs no torch import (the CLI lists the modes in
--help).
"""

from __future__ import annotations

import contextlib
import platform

from zoo.core.errors import ZooError

#: autocast modes of training and inference: the autocast dtype, or off (float32)
AMP_MODES = ("bf16", "fp16", "off")
#: `auto` resolves to bf16, or to off on a CPU without bf16 instructions (`resolve_amp`)
AMP_CHOICES = ("auto", *AMP_MODES)
#: numeric types the benchmark compares; int8 runs a quantized graph, without autocast
DTYPES = ("fp32", "bf16", "fp16", "int8")
#: the autocast mode each numeric type runs under
AMP_OF_DTYPE = {"fp32": "off", "bf16": "bf16", "fp16": "fp16", "int8": "off"}
#: the numeric type an autocast mode computes in
DTYPE_OF_AMP = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}


def check_amp(amp: str) -> str:
    if amp not in AMP_MODES:
        raise ZooError(f"unknown --amp {amp!r}; choose {', '.join(AMP_MODES)}")
    return amp


def torch_dtype(dtype: str):
    """The torch dtype of a floating numeric type of DTYPES."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def autocast(device, amp: str):
    """The autocast context for `amp`, one of AMP_MODES, on `device`."""
    import torch

    if check_amp(amp) == "off":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch_dtype(amp))


def slow_amp_note(device, amp: str, remedy: str = "pass --amp off") -> str | None:
    """A warning when `amp` is bf16 on an x86 CPU without bf16 instructions (AVX512-BF16 or AMX), where bf16
    convolutions run many times slower than float32 ones."""
    import torch

    if amp != "bf16" or torch.device(device).type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return None
    return ("this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 autocast runs many times slower than "
            f"float32 here; {remedy}")


def resolve_amp(amp: str, device) -> str:
    """`amp` (AMP_CHOICES), with "auto" made bf16 where `device` runs it at speed and off (float32) where not."""
    if amp == "auto":
        return "off" if slow_amp_note(device, "bf16") else "bf16"
    return check_amp(amp)
