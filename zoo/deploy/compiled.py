"""Running the model through torch.compile (TorchInductor) in place of its eager forward pass (`zoo predict
--compile`, and the `compile` rows of `zoo bench`).

Inference graphs are compiled with `freezing`: the weights become constants, folded and pre-packed for oneDNN once
instead of being reordered on every call. Freezing makes inductor skip its FX graph and AOTAutograd caches (a graph
with frozen constants is never stored), so every process traces and lowers the model again; what it does reuse
from the cache folder is the compiled C++ kernels, which are most of a first compilation's time. Caching the whole
graph instead (no freezing) starts a little faster on a second run but gives up the per-frame gain of the
pre-packed weights on every frame after it, so freezing wins on any job long enough to be worth compiling.

The compiled graph serves the one input shape it was compiled for (the first batch's): a batch of another shape
(a video's last, shorter batch, an image of another size, an edge tile) runs eagerly rather than compiling again.
Its first batch is checked against an eager float32 forward of the same batch, and the job falls back to the eager
forward for good when a count disagrees.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

import torch

from zoo.core.errors import ZooError
from zoo.core.paths import inductor_cache_dir

# A compiled count agrees with the float32 one within this share of it, or within COUNT_SLACK, the larger.
COUNT_TOLERANCE = 0.01
COUNT_SLACK = 0.5


def compile_module(module: torch.nn.Module):
    """`module` (in eval mode, prepared for inference) compiled by TorchInductor for static shapes, weights frozen,
    with inductor's on-disk caches in zoo.core.paths.inductor_cache_dir(). Compiling happens at its first call."""
    # Inductor reads the variable whenever it touches its caches, so setting it here moves them all.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
    return torch.compile(module, dynamic=False, options={"freezing": True})


def disagreeing_counts(compiled: list[float], reference: list[float]) -> list[tuple[float, float]]:
    """(compiled, float32) pairs whose difference exceeds the tolerance."""
    return [(c, r) for c, r in zip(compiled, reference, strict=True)
            if abs(c - r) > max(COUNT_TOLERANCE * abs(r), COUNT_SLACK)]


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


class CheckedCompile:
    """`images -> outputs` through `model` compiled (compile_module) for the first batch's shape, that first batch
    checked against an eager float32 forward; the eager `model` for other shapes, and for everything once the check
    failed. Called where the eager forward would be (under the caller's autocast, on its memory format)."""

    def __init__(self, model, threshold: float, say: Callable[[str], None] = _to_stderr,
                 warn: Callable[[str], None] = _to_stderr):
        self.model = model
        self.threshold = threshold
        self.say, self.warn = say, warn
        self.compiled = compile_module(model)
        self.layout = None  # (shape, strides, dtype, device) of the batch the compiled graph serves

    def __call__(self, images: torch.Tensor) -> dict:
        layout = (tuple(images.shape), images.stride(), images.dtype, images.device)
        if self.compiled is None or (self.layout is not None and layout != self.layout):
            return self.model(images)
        if self.layout is not None:
            return self.compiled(images)
        self.layout = layout
        start = time.perf_counter()
        outputs = self.compiled(images)
        with torch.autocast(images.device.type, enabled=False):
            reference = self.model(images.float())
        sizes = torch.tensor([images.shape[-2:]] * len(images), dtype=torch.long, device=images.device)
        counts = [p.count for p in self.model.decode(outputs, sizes, self.threshold)]
        fp32 = [p.count for p in self.model.decode(reference, sizes, self.threshold)]
        wrong = disagreeing_counts(counts, fp32)
        if wrong:
            self.compiled = None
            shown = ", ".join(f"{c:.1f} vs {r:.1f}" for c, r in wrong)
            self.warn(f"the compiled model's counts differ from eager float32 ({shown}): running it eagerly")
            return self.model(images)
        self.say(f"compiled the model for {'x'.join(map(str, images.shape))} in {time.perf_counter() - start:.1f} s "
                 f"(its first batch and the float32 check included); cache: {inductor_cache_dir()}")
        return outputs


def with_compiled(run, say: Callable[[str], None] = _to_stderr, warn: Callable[[str], None] = _to_stderr):
    """`run` (a zoo.inference.predict.Inference on torch) with its forward pass compiled and checked
    (CheckedCompile); `say` gets the line stating what compiling cost, `warn` the one saying it fell back."""
    if run.forward is not run.model:
        raise ZooError("--compile compiles the torch model; this run's forward pass is another runtime's")
    return dataclasses.replace(run, forward=CheckedCompile(run.model, run.threshold, say, warn))
