"""`zoo predict --compile`'s forward pass: the compiled graph's counts match eager, its cache lands where the zoo
says, and a compiled graph whose counts disagree with float32 is dropped for the eager forward."""

from __future__ import annotations

import pytest
import torch
from support import tiny_family  # noqa: F401  (registers tiny_density)

from zoo.deploy import compiled
from zoo.deploy.compiled import CheckedCompile, disagreeing_counts
from zoo.models.factory import create_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = create_model("tiny_density").eval()
    with torch.no_grad():  # a positive bias: counts well above zero, so a perturbation shows
        net.head[-1].bias.fill_(0.5)
    return net


def frames(n: int = 2, size: tuple[int, int] = (32, 48)) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(1))


def counts(model, outputs, images) -> list[float]:
    sizes = torch.tensor([images.shape[-2:]] * len(images))
    return [p.count for p in model.decode(outputs, sizes, 0.3)]


def test_tolerance_is_one_percent_or_half_a_person():
    assert disagreeing_counts([100.9, 3.4, 0.0], [100.0, 3.0, 0.0]) == []
    assert disagreeing_counts([101.2, 3.6], [100.0, 3.0]) == [(101.2, 100.0), (3.6, 3.0)]


@pytest.mark.slow
def test_compiled_counts_match_eager_and_the_cache_is_the_zoos(model, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    said, warned = [], []
    forward = CheckedCompile(model, 0.3, said.append, warned.append)
    images = frames()
    with torch.no_grad():
        outputs = forward(images)
        again = forward(frames())
        eager = model(images)
    assert counts(model, outputs, images) == pytest.approx(counts(model, eager, images), rel=1e-4)
    assert counts(model, again, images) == pytest.approx(counts(model, eager, images), rel=1e-4)
    assert warned == [] and len(said) == 1 and str(tmp_path / "inductor") in said[0]
    assert any((tmp_path / "inductor").rglob("*")), "inductor wrote nothing to the zoo's cache folder"


def test_other_shapes_run_eagerly(model, monkeypatch):
    calls = []

    def fake_compile(module):
        return lambda images: calls.append(tuple(images.shape)) or module(images)

    monkeypatch.setattr(compiled, "compile_module", fake_compile)
    forward = CheckedCompile(model, 0.3, lambda line: None, lambda line: None)
    with torch.no_grad():
        forward(frames(2))
        forward(frames(1))  # a last, shorter batch
        forward(frames(2, (48, 32)))  # another size
        forward(frames(2))
    assert calls == [(2, 3, 32, 48), (2, 3, 32, 48)]


def test_disagreeing_counts_warn_once_and_fall_back_to_eager(model, monkeypatch):
    def perturbed(module):
        return lambda images: {"density": module(images)["density"] * 1.5}

    monkeypatch.setattr(compiled, "compile_module", perturbed)
    said, warned = [], []
    forward = CheckedCompile(model, 0.3, said.append, warned.append)
    images = frames()
    with torch.no_grad():
        first, second = forward(images), forward(images)
        eager = model(images)
    assert len(warned) == 1 and said == []
    assert f"{counts(model, eager, images)[0]:.1f}" in warned[0]  # it names the float32 count
    for outputs in (first, second):
        torch.testing.assert_close(outputs["density"], eager["density"])
