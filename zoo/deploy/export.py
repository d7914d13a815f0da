"""`zoo export`: a model as an ONNX file for deployment, with the height and width of its input left dynamic.

Only the network is exported; decoding (thresholds, peaks, density sums) stays in each family's `decode`, which
zoo.deploy.runtime runs on onnxruntime's outputs exactly as on the torch forward's. The graph is traced by
`torch.onnx.export(dynamo=True)` (torch.export) at opset 18, the opset torch's ONNX function library is written
for (other opsets go through the ONNX version converter). Height and width are symbolic multiples of the model's
stride and the batch is symbolic too, so one file serves every padded input size.

Output tensors are named after their place in the forward's dict (`density`; lists flattened as `global.0` ..
`global.3`) and the ONNX metadata records, as JSON strings under `zoo.*` keys, what is needed to rebuild the dict
and decode it: the registered model and its options, the decision threshold, the stride, the zoo version and
the output structure (the dict with each tensor replaced by its output name).

Importing this module costs nothing: torch and the ONNX packages are imported when a model is exported.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import re
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.core.files import sha256

DEFAULT_OPSET = 18
#: what runs a model's forward pass (--runtime); decoding is always the family's
RUNTIMES = ("torch", "onnxruntime", "openvino")
#: the numeric types each runtime of the exported file runs it at: int8 is its quantization (zoo.deploy.quantize)
EXPORTED_DTYPES = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
ONNX_INSTALL = "pip install 'crowd-zoo[onnx]'"
INPUT_NAME = "images"
CHECKPOINT_DIGEST = "zoo.checkpoint_sha256"
INPUT_NOTE = ("images (batch, 3, height, width) float32: RGB / 255 normalized by the ImageNet mean and std, "
              "zero-padded at the bottom and right so that height and width are multiples of zoo.stride")


def require(module: str, why: str = f"ONNX export and onnxruntime need it: {ONNX_INSTALL}"):
    """Import an optional package (by default one of the `onnx` extra's), or say in one line why it is needed and
    how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ZooError(f"{module} is not installed; {why}") from None


def flatten_outputs(outputs, prefix: str = "") -> tuple[list[str], object]:
    """The output names of a forward's tensors, in the order the exporter flattens them (dicts in insertion
    order, lists and tuples by index), and the structure with each tensor replaced by its name (JSON-ready;
    tuples become lists)."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return [prefix], prefix
    if isinstance(outputs, dict):
        items, structure = list(outputs.items()), {}
    elif isinstance(outputs, list | tuple):
        items, structure = list(enumerate(outputs)), []
    else:
        raise TypeError(f"output {prefix or 'of forward'} is a {type(outputs).__name__}, not a tensor")
    names = []
    for key, value in items:
        inner_names, inner = flatten_outputs(value, f"{prefix}.{key}" if prefix else str(key))
        names += inner_names
        if isinstance(structure, dict):
            structure[str(key)] = inner
        else:
            structure.append(inner)
    return names, structure


def rebuild_outputs(structure, tensors: dict):
    """The inverse of `flatten_outputs`: the structure with each output name replaced by its tensor."""
    if isinstance(structure, str):
        return tensors[structure]
    if isinstance(structure, dict):
        return {key: rebuild_outputs(value, tensors) for key, value in structure.items()}
    return [rebuild_outputs(value, tensors) for value in structure]


def checkpoint_metadata(weights: str | Path) -> dict[str, str]:
    """Metadata naming the checkpoint a file is exported from: `--onnx FILE` is refused with other weights."""
    return {"zoo.checkpoint": Path(weights).name, CHECKPOINT_DIGEST: sha256(weights)}


def export_onnx(model, path: str | Path, *, threshold: float, opset: int = DEFAULT_OPSET,
                metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Write `model` (a CrowdModel, e.g. `load_inference(...).model`, batch norm already folded) to the ONNX file
    `path` atomically, traced in eval mode on its own device. `metadata` adds `zoo.*` entries (e.g. the
    checkpoint's digest). Returns the metadata written; a model the exporter cannot trace is a ZooError."""
    for module in ("onnx", "onnxscript"):
        require(module)
    import torch
    from torch.export import Dim

    from zoo import __version__
    from zoo.core.files import atomic_write

    name = getattr(model, "registry_name", type(model).__name__)
    stride = model.stride
    parameter = next(model.parameters(), None)
    # Batch 2 and sides of 2 and 3 strides: torch.export would fix a size of 1 as a constant, and equal sides
    # as one symbol.
    example = torch.zeros(2, 3, 2 * stride, 3 * stride, device=parameter.device if parameter is not None else "cpu")
    dims = {0: Dim("batch", min=1), 2: stride * Dim("height_in_strides", min=1),
            3: stride * Dim("width_in_strides", min=1)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            names, structure = flatten_outputs(model(example))
        with quiet():
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=(dims,),
                                        opset_version=opset, input_names=[INPUT_NAME], output_names=names,
                                        verbose=False)
    except Exception as exc:  # what the outputs' form, torch.export or the converter rejects is this model's limit
        raise ZooError(f"{name}: cannot be exported to ONNX ({export_failure(exc)})") from None
    finally:
        model.train(was_training)
    made = program.model.opset_imports.get("")
    if made != opset:
        raise ZooError(f"{name}: the exporter made opset {made}, not --opset {opset} (the version converter failed; "
                       f"use {DEFAULT_OPSET} or later)")
    written = {"zoo.model": name, "zoo.options": json.dumps(getattr(model, "registry_kwargs", {}), default=str),
               "zoo.threshold": json.dumps(float(threshold)), "zoo.stride": str(stride), "zoo.version": __version__,
               "zoo.input": INPUT_NOTE, "zoo.outputs": json.dumps(structure), **(metadata or {})}
    program.model.metadata_props.update(written)
    atomic_write(Path(path), lambda tmp: program.save(tmp, external_data=False))
    return written


@contextlib.contextmanager
def quiet():
    """Drop what the exporter writes to stderr: on a failure torch.export prints the partial graph and logs
    pages of warnings, and the one-line error from `export_failure` says why."""
    disabled = logging.root.manager.disable
    logging.disable(logging.ERROR)  # torch's log handlers hold the original stderr: redirecting misses them
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(disabled)


def export_failure(exc: BaseException) -> str:
    """One line on why the exporter failed: the underlying error's first line and the model code it points at."""
    cause = exc.__cause__ or exc
    text = str(cause)
    first = (text.strip().splitlines() or [""])[0]
    where = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    at = f" at {Path(where[-1][0]).name}:{where[-1][1]} in {where[-1][2]}" if where else ""
    return f"{type(cause).__name__}: {first}{at}"
