"""The int8 matmul ceiling (u8 x s8 -> s32 products on onnxruntime) and the instruction set each ceiling is
labelled with, from the CPU's flags."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.bench import measure
from zoo.core import provenance

CPU = torch.device("cpu")


def test_the_int8_ceiling_is_a_positive_finite_rate_on_a_tiny_budget(monkeypatch):
    monkeypatch.setattr(measure, "MATMUL_SIZE", {"cpu": 256, "cuda": 1024})
    timed = []
    integer_product_seconds = measure.integer_product_seconds
    monkeypatch.setattr(measure, "integer_product_seconds",
                        lambda n, repeats: timed.append(n) or integer_product_seconds(n, repeats))
    rate = measure.matmul_ceiling(CPU, "int8", repeats=1, budget_seconds=0.0)
    assert math.isfinite(rate) and rate > 0
    assert timed == [64]  # the int8 route only, on the quarter-side product (no budget for the full one)


def test_one_integer_product_is_timed_in_positive_seconds():
    assert 0 < measure.integer_product_seconds(32, repeats=1) < math.inf


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
    assert {dtype: measure.ceiling_instructions(CPU, dtype) for dtype in expected} == expected
    assert measure.ceiling_instructions(torch.device("cuda"), "int8") is None


def test_the_cpu_instructions_follow_torchs_detection(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert provenance.cpu_instructions() == {"avx2": True, "avx512": False, "avx512_vnni": True,
                                             "avx512_bf16": False, "amx": False}
