"""Running an exported model in place of the torch forward pass (`--runtime onnxruntime` or `--runtime openvino`).

A runner is a callable `images -> outputs` that returns the dict the torch forward returns (same keys, nesting and
dtypes, rebuilt from the file's `zoo.outputs` metadata), so the family's own `decode` turns it into predictions and
nothing downstream knows which runtime ran. Both runtimes read the same `zoo export` file, fp32 or its int8 QDQ
quantization (zoo.deploy.quantize), and run it on the CPU with torch's intra-op thread count, so the runtimes are
timed on the same cores. The graph takes float32 NCHW inputs: channels_last and autocast are torch settings.

onnxruntime runs the file as written. OpenVINO (the `openvino` extra) compiles it for the CPU at an inference
precision: fp32, or bf16 on a CPU with bf16 instructions (AVX512-BF16 or AMX); its quantized operations of an
int8 file run in int8 either way. OpenVINO's own default on such CPUs is bf16, so fp32 is always asked for.
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
from zoo.deploy.export import CHECKPOINT_DIGEST, EXPORTED_DTYPES, export_onnx, rebuild_outputs, require

OPENVINO_INSTALL = "pip install 'crowd-zoo[openvino]'"
#: OpenVINO's inference precision of the float operations, by the numeric type asked for (an int8 file's float
#: operations, those quantization kept, stay float32 as on onnxruntime)
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class ExportedRunner:
    """What both runtimes share: the `zoo.*` metadata, the input check and rebuilding the forward's dict. A
    subclass sets `runtime`, `metadata` and `names` (the output names) and runs arrays in `run`."""

    runtime = ""

    def __init__(self, path: str | Path, metadata: dict[str, str], names: list[str]):
        if "zoo.outputs" not in metadata:
            raise ZooError(f"{path}: not written by zoo export (no zoo.outputs metadata to rebuild the outputs)")
        self.metadata = metadata
        self.structure = json.loads(metadata["zoo.outputs"])
        self.stride = int(metadata["zoo.stride"])
        self.names = names

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> dict:
        height, width = images.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ZooError(f"{self.metadata['zoo.model']} ({self.runtime}): input {height}x{width} must have sides "
                           f"that are multiples of {self.stride} (pad it; the data layer does)")
        arrays = self.run(np.ascontiguousarray(images.detach().cpu().numpy()))
        tensors = {name: torch.from_numpy(array).to(images.device) for name, array in zip(self.names, arrays,
                                                                                            strict=True)}
        return rebuild_outputs(self.structure, tensors)


class OnnxRunner(ExportedRunner):
    """An ONNX file written by `zoo export`, run by onnxruntime on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid files
            raise unreadable(path, "onnxruntime", exc) from None
        super().__init__(path, self.session.get_modelmeta().custom_metadata_map,
                         [output.name for output in self.session.get_outputs()])
        self.input = self.session.get_inputs()[0].name

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.names, {self.input: images})


class OpenVinoRunner(ExportedRunner):
    """An ONNX file written by `zoo export`, compiled by OpenVINO for the CPU at `dtype` (EXPORTED_DTYPES)."""

    runtime = "openvino"

    def __init__(self, path: str | Path, dtype: str = "fp32", threads: int | None = None):
        ov = require_openvino()
        check_openvino_dtype(dtype)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO's RuntimeError: lines naming its own sources, then the reason
            raise unreadable(path, "openvino", exc, last_line=True) from None
        metadata = {}
        if model.has_rt_info("framework"):  # where OpenVINO's ONNX reader keeps the file's metadata_props
            metadata = {key: value.astype(str) for key, value in model.get_rt_info("framework").astype(dict).items()}
        super().__init__(path, metadata, [output.get_any_name() for output in model.outputs])
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[dtype], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        compiled = core.compile_model(model, "CPU", config)
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        # Copies: the request's output buffers are reused by its next inference.
        results = self.request.infer({0: images}, share_outputs=False)
        return [results[output] for output in self.outputs]


def require_openvino():
    """The openvino package, or a one-line ZooError saying how to install it."""
    return require("openvino", f"--runtime openvino needs it: {OPENVINO_INSTALL}")


def check_openvino_dtype(dtype: str) -> None:
    """Refuse, in one line, a numeric type OpenVINO does not run here: bf16 needs the CPU's bf16 instructions,
    without which a run asked for in bf16 would not be one."""
    if dtype not in EXPORTED_DTYPES["openvino"]:
        raise ZooError(f"--runtime openvino runs {', '.join(EXPORTED_DTYPES['openvino'])}, not {dtype}")
    if dtype == "bf16" and "BF16" not in openvino_capabilities():
        raise ZooError("--runtime openvino: bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX), and this "
                       "one has none; run fp32")


def openvino_capabilities() -> list[str]:
    """What OpenVINO finds the CPU can compute in (its OPTIMIZATION_CAPABILITIES: FP32, BF16, INT8, ...)."""
    return list(require_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def exported_runner(runtime: str, path: str | Path, dtype: str = "fp32") -> ExportedRunner:
    """The `zoo export` file `path` (int8 for dtype int8) on `runtime` (a key of EXPORTED_DTYPES)."""
    if runtime == "openvino":
        return OpenVinoRunner(path, dtype)
    return OnnxRunner(path)


def with_exported(run, weights: str | Path, onnx: str | Path | None = None, runtime: str = "onnxruntime",
                  dtype: str = "fp32"):
    """`run` (a zoo.inference.predict.Inference of the checkpoint `weights`) with its forward pass on `runtime` at
    `dtype`: the file `onnx` (a `zoo export` of the same checkpoint), or, without one, the model exported now to a
    temporary file that the runtime has read in full before it is deleted."""
    # The runtime's package and the CPU's instructions are checked before a minute of exporting, not after.
    if runtime == "openvino":
        check_openvino_dtype(dtype)
    else:
        require("onnxruntime")
    if run.device.type != "cpu":
        raise ZooError(f"--runtime {runtime} runs on the CPU (the {runtime} package); not --device {run.device}")
    if onnx is None:
        with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(run.model, path, threshold=run.threshold)
            runner = exported_runner(runtime, path, dtype)
    else:
        runner = exported_runner(runtime, onnx, dtype)
        exported_from = runner.metadata.get(CHECKPOINT_DIGEST)
        if exported_from != sha256(weights):
            raise ZooError(f"{onnx}: was not exported from {weights} (its recorded checkpoint digest differs); "
                           f"export it again: zoo export --weights {weights} --out {onnx}")
    return dataclasses.replace(run, forward=runner, amp="off", channels_last=False)


def unreadable(path: str | Path, runtime: str, exc: BaseException, last_line: bool = False) -> ZooError:
    """The one-line error for a file `runtime` cannot load, with the first (or last) line of the runtime's own
    reason."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1 if last_line else 0]
    return ZooError(f"{path}: {runtime} cannot load it ({reason})")
