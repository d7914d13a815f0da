"""The int8 ceiling (u8 x s8 -> s32 products and 3x3 convolutions on onnxruntime) and the instruction set each
ceiling is labelled with, from the CPU's flags."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from zoo.bench import ceiling
from zoo.core import provenance
from zoo.core.errors import ZooError

CPU = torch.device("cpu")


def test_the_int8_ceiling_is_a_positive_finite_rate_on_a_tiny_budget(monkeypatch):
    monkeypatch.setattr(ceiling, "FULL_SIZE", {"cpu": 256, "cuda": 1024})
    timed = []
    seconds = ceiling.workload_seconds
    monkeypatch.setattr(ceiling, "workload_seconds", lambda route, n, device, dtype, repeats:
                        timed.append((route, n)) or seconds(route, n, device, dtype, repeats))
    rate = ceiling.compute_ceiling(CPU, "int8", repeats=1, budget_seconds=0.0)
    assert math.isfinite(rate) and rate > 0
    # the int8 routes only, at a quarter of the full size (no budget for the full one)
    assert timed == [("matmul_integer", 64), ("qlinear_conv3x3", 64)]


@pytest.mark.parametrize("route", ceiling.INT8_ROUTES)
def test_one_integer_workload_is_timed_in_positive_seconds(route):
    assert 0 < ceiling.workload_seconds(route, 64, CPU, "int8", repeats=1) < math.inf


def test_without_onnx_the_int8_ceiling_is_a_one_line_error_the_harness_reports(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the optional package were not installed
    with pytest.raises(ZooError, match="onnx is not installed"):
        ceiling.compute_ceiling(CPU, "int8", repeats=1, budget_seconds=0.0)


ALL = {"avx2": True, "avx512": True, "avx512_vnni": True, "avx512_bf16": True, "amx": True}


@pytest.mark.parametrize("found, expected", [
    (ALL, {"fp32": "avx512", "bf16": "amx", "int8": "amx"}),
    ({**ALL, "amx": False}, {"fp32": "avx512", "bf16": "avx512_bf16", "int8": "avx512_vnni"}),
    ({**ALL, "amx": False, "avx512_bf16": False}, {"fp32": "avx512", "bf16": "avx512", "int8": "avx512_vnni"}),
    ({"avx2": True, "avx512": False, "avx512_vnni": False, "avx512_bf16": False, "amx": False},
     {"fp32": "avx2", "bf16": "avx2", "int8": "avx2"}),
    (dict.fromkeys(ALL, False), {"fp32": None, "bf16": None, "int8": None}),
])
def test_each_ceiling_names_the_widest_instructions_its_type_can_use(monkeypatch, found, expected):
    monkeypatch.setattr(provenance, "cpu_instructions", lambda: found)
    assert {dtype: ceiling.ceiling_instructions(CPU, dtype) for dtype in expected} == expected
    assert ceiling.ceiling_instructions(torch.device("cuda"), "int8") is None


def test_the_cpu_instructions_follow_torchs_detection(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert provenance.cpu_instructions() == {"avx2": True, "avx512": False, "avx512_vnni": True,
                                             "avx512_bf16": False, "amx": False}
