"""int8 static quantization of an exported model for onnxruntime, calibrated on training images.

The fp32 ONNX file of `zoo export` becomes a QDQ graph: weights int8 per output channel, activations uint8 with
ranges observed by running the fp32 graph over calibration images (whole training images, padded to the stride
as evaluation pads them), each range the 0.05-99.95 percentiles of what it saw (`CALIBRATION_PERCENTILE`). The
percentile trades clipping against resolution: wider ranges (min/max, stretched by rare large activations, or the
99.99th percentile) left a trained cells CPN's counts more than 1% above float32, a narrower one (99.9th) moved a
P2PNet's mean image by more than 1% (results/int8.csv, `python -m benchmarks.int8_check --percentile`). The
convolutions that read the image or reach an output stay float32 (`edge_convolutions`). onnxruntime runs the rest
as int8 products (VNNI / AMX on x86). Decoding stays the family's, on dequantized float outputs, so an int8 file is
used exactly like an fp32 one
(`--onnx FILE`). Whether int8 is good enough is a measurement, not an assumption: compare its counts with the
fp32 ones on a real test set (`zoo eval --onnx`), as docs/results.md records for the committed rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.deploy.export import INPUT_NAME, require

#: The upper percentile of each activation's calibration range (the lower one mirrors it), one for every family:
#: chosen on the validation images of the fair-v1 search checkpoints of the three families, as the one of 99.99,
#: 99.95 and 99.9 that kept every family's counts within 1% of float32.
CALIBRATION_PERCENTILE = 99.95


def method(percentile: float = CALIBRATION_PERCENTILE) -> str:
    """What a quantized file is, recorded in its metadata (`zoo.quantization`) and in results/int8.csv."""
    return (f"QDQ; weights int8 per output channel; activations uint8 over their {100 - percentile:.2f}-"
            f"{percentile:.2f} percentile ranges; convolutions reading the image or reaching an output kept float32")


#: Calibration images used when the caller does not say: enough for stable min/max ranges of every activation
#: (the ranges are a maximum over images, so they only widen with more).
CALIBRATION_IMAGES = 16


def calibration_batches(data: str, stride: int, count: int = CALIBRATION_IMAGES, fmt: str = "auto",
                        seed: int = 0) -> Iterator:
    """(1, 3, H, W) float32 arrays: `count` seeded training images of `data`, whole, padded to `stride`."""
    import numpy as np

    from zoo.data.collate import collate
    from zoo.data.dataset import PointDataset, resolve_splits

    splits = resolve_splits(data, fmt, seed)
    records = splits.get("train")
    order = np.random.default_rng(seed).permutation(len(records))[:count]
    dataset = PointDataset([records[i] for i in sorted(order)], f"{splits.name}:calibration", stride=stride)
    for index in range(len(dataset)):
        yield collate([dataset[index]]).images.numpy()


def quantize_onnx(source: str | Path, out: str | Path, batches: Iterator, note: str,
                  percentile: float = CALIBRATION_PERCENTILE) -> None:
    """Write the int8 QDQ version of the fp32 ONNX file `source` to `out` (atomically), its activation ranges
    observed on `batches`; the `zoo.*` metadata is carried over, with `zoo.precision` int8 and `note` (what it was
    calibrated on) as `zoo.calibration`."""
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from zoo.core.files import atomic_write

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.seen = 0

        def get_next(self):
            batch = next(batches, None)
            if batch is None:
                return None
            self.seen += 1
            return {INPUT_NAME: batch}

    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="zoo-int8-") as folder:
        prepared, quantized = Path(folder) / "prepared.onnx", Path(folder) / "int8.onnx"
        # Graph clean-up and shape inference first, as onnxruntime advises; symbolic shape inference cannot
        # resolve the exporter's stride-multiple dimensions and is not needed for convolutions.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=edge_convolutions(onnx.load(str(prepared))),
                        calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": percentile})
        if not reader.seen:
            raise ZooError(f"{source}: no calibration images, so int8 ranges cannot be measured")
        model = onnx.load(str(quantized))
    metadata = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    metadata.update({"zoo.precision": "int8", "zoo.quantization": method(percentile),
                     "zoo.calibration": f"{note} ({reader.seen} images)"})
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    atomic_write(Path(out), lambda tmp: onnx.save(model, tmp))


def quantize_on_training_images(source: str | Path, out: str | Path, data: str, stride: int,
                                images: int = CALIBRATION_IMAGES, percentile: float = CALIBRATION_PERCENTILE) -> None:
    """`quantize_onnx` calibrated on `images` seeded training images of dataset `data`, recorded as such."""
    quantize_onnx(source, out, calibration_batches(data, stride, images), f"train split of {data}", percentile)


def export_int8(model, out: str | Path, data: str, *, threshold: float, images: int = CALIBRATION_IMAGES,
                percentile: float = CALIBRATION_PERCENTILE, **export_options) -> None:
    """`model` exported as `zoo.deploy.export.export_onnx` exports it (to a temporary fp32 file) and quantized to `out`,
    calibrated on `images` training images of `data`."""
    from zoo.deploy.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="zoo-int8-export-") as folder:
        fp32 = Path(folder) / "fp32.onnx"
        export_onnx(model, fp32, threshold=threshold, **export_options)
        quantize_on_training_images(fp32, out, data, model.stride, images, percentile)


def edge_convolutions(model) -> list[str]:
    """The convolutions that read the input image and those whose results reach an output without passing
    another convolution: they stay float32. A count sums thousands of output cells (or thresholds logits), so the
    output layer's rounding does not average out, and the first layer sees raw pixels with their full range;
    both are a small share of the products."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inputs = {i.name for i in model.graph.input}
    kept = {node.name for node in model.graph.node if node.op_type == "Conv" and set(node.input) & inputs}
    pending = [o.name for o in model.graph.output]
    seen = set()
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            kept.add(node.name)
        else:
            pending += list(node.input)
    return sorted(kept)
