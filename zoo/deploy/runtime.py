"""Running an exported model with onnxruntime in place of the torch forward pass (`--runtime onnxruntime`).

`OnnxRunner` is a callable `images -> outputs` that returns the dict the torch forward returns (same keys,
nesting and dtypes, rebuilt from the file's `zoo.outputs` metadata), so the family's own `decode` turns it into
predictions and nothing downstream knows which runtime ran. onnxruntime from PyPI runs on the CPU; its intra-op
threads are torch's, so the two runtimes are timed on the same cores. Mixed precision and channels_last are torch
settings: the exported graph runs in float32 on NCHW inputs.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.core.files import sha256
from zoo.deploy.export import CHECKPOINT_DIGEST, export_onnx, rebuild_outputs, require


class OnnxRunner:
    """An ONNX file written by `zoo export`, run by onnxruntime on the CPU."""

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid files
            raise ZooError(f"{path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0]})") from None
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        if "zoo.outputs" not in self.metadata:
            raise ZooError(f"{path}: not written by zoo export (no zoo.outputs metadata to rebuild the outputs)")
        self.structure = json.loads(self.metadata["zoo.outputs"])
        self.stride = int(self.metadata["zoo.stride"])
        self.names = [output.name for output in self.session.get_outputs()]
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> dict:
        height, width = images.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ZooError(f"{self.metadata['zoo.model']} (onnxruntime): input {height}x{width} must have sides "
                           f"that are multiples of {self.stride} (pad it; the data layer does)")
        arrays = self.session.run(self.names, {self.input: np.ascontiguousarray(images.detach().cpu().numpy())})
        tensors = {name: torch.from_numpy(array).to(images.device) for name, array in zip(self.names, arrays,
                                                                                            strict=True)}
        return rebuild_outputs(self.structure, tensors)


def with_onnxruntime(run, weights: str | Path, onnx: str | Path | None = None):
    """`run` (a zoo.inference.predict.Inference of the checkpoint `weights`) with its forward pass on onnxruntime: the
    file
    `onnx` (a `zoo export` of the same checkpoint), or, without one, the model exported now to a temporary file
    that the session has read in full before it is deleted."""
    require("onnxruntime")  # before a minute of exporting, not after
    if run.device.type != "cpu":
        raise ZooError(f"--runtime onnxruntime runs on the CPU (the onnxruntime package); not --device {run.device}")
    if onnx is None:
        with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(run.model, path, threshold=run.threshold)
            runner = OnnxRunner(path)
    else:
        runner = OnnxRunner(onnx)
        exported_from = runner.metadata.get(CHECKPOINT_DIGEST)
        if exported_from != sha256(weights):
            raise ZooError(f"{onnx}: was not exported from {weights} (its recorded checkpoint digest differs); "
                           f"export it again: zoo export --weights {weights} --out {onnx}")
    return dataclasses.replace(run, forward=runner, amp="off", channels_last=False)
