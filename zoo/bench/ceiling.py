"""The machine's ceiling per precision: the fastest rate its own kernels reach, measured in the run it rates.

A row's achieved GFLOP/s (its FLOPs over its time) is reported as a fraction of the ceiling of its precision. The
ceiling is the best of several workloads, because no single kernel runs at the machine's peak everywhere: on AMD
CPUs MKL's fp32 matrix product runs well below oneDNN's convolutions, and the models' heaviest layers are 3x3
convolutions of hundreds of channels. A ceiling from square products alone was beaten by the models.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from zoo.core import provenance
from zoo.core.device import synchronize
from zoo.core.precision import torch_dtype
from zoo.deploy.export import DEFAULT_OPSET, require

SEED = 0
# The size n of the full workloads: n x n products, and 3x3 convolutions of n / 8 channels on n / 32 x n / 32 pixels
# (at n = 4096, 512 channels on 128 x 128: a VGG-16 conv4 layer on a photo of about 1024 x 1024).
FULL_SIZE = {"cpu": 4096, "cuda": 8192}


def product_flops(n: int) -> int:
    return 2 * n**3


def conv3x3_shape(n: int) -> tuple[int, int]:
    """(channels, side) of the 3x3 convolution of size n."""
    return max(n // 8, 1), max(n // 32, 1)


def conv3x3_flops(n: int) -> int:
    channels, side = conv3x3_shape(n)
    return 2 * channels * channels * 9 * side * side


# Each workload by precision: float types run on torch (MKL or cuBLAS for `matmul`; oneDNN or cuDNN for the
# convolutions, channels last as the models run), int8 on onnxruntime (uint8 activations by int8 constant weights
# into int32 sums, the weights packed once for the CPU's int8 instructions, as a quantized model's are). torch has
# no such int8 route on the CPU: `torch._int_mm` is a reference loop that uses neither VNNI nor AMX, and its
# quantized engines are deprecated. onnxruntime is present wherever int8 rows run: it calibrates them.
ROUTES = ("matmul", "conv1x1", "conv3x3")
INT8_ROUTES = ("matmul_integer", "qlinear_conv3x3")
ROUTE_FLOPS = {"matmul": product_flops, "conv1x1": product_flops, "conv3x3": conv3x3_flops,
               "matmul_integer": product_flops, "qlinear_conv3x3": conv3x3_flops}


def compute_ceiling(device: torch.device, dtype: str, repeats: int = 2, budget_seconds: float = 20.0) -> float:
    """GFLOP/s (int8: GOP/s) of the fastest workload of `dtype` (ROUTES, INT8_ROUTES): the best of `repeats` timed
    calls after one warm-up. fp32 on CUDA follows cuDNN's default TF32 policy, as the convolutions do.

    Each workload is timed at a quarter of the full size first, and at the full size only where that would take at
    most `budget_seconds`: bf16 on a CPU without bf16 instructions runs some routes at about 1 GFLOP/s, where the
    full workload would take minutes.
    """
    full = FULL_SIZE[device.type]
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    best = 0.0
    try:
        for route in INT8_ROUTES if dtype == "int8" else ROUTES:
            flops = ROUTE_FLOPS[route]
            n = full // 4
            seconds = workload_seconds(route, n, device, dtype, repeats)
            if seconds * flops(full) / flops(n) * (repeats + 1) <= budget_seconds:
                n, seconds = full, workload_seconds(route, full, device, dtype, repeats)
            best = max(best, flops(n) / seconds / 1e9)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return best


def ceiling_instructions(device: torch.device, dtype: str) -> str | None:
    """The instruction set a `dtype` workload can use on this CPU (provenance.cpu_instructions): AMX, or the
    AVX-512 extension of the type's own (avx512_bf16, avx512_vnni), else the widest vector unit (avx512, avx2),
    where bf16 and int8 are converted or widened in float32 or int16 steps. None on CUDA or another CPU."""
    if device.type != "cpu":
        return None
    found = provenance.cpu_instructions()
    own = {"bf16": ("amx", "avx512_bf16"), "int8": ("amx", "avx512_vnni")}.get(dtype, ())
    return next((name for name in (*own, "avx512", "avx2") if found[name]), None)


def workload_seconds(route: str, n: int, device: torch.device, dtype: str, repeats: int) -> float:
    """The best time of `route`'s workload of size n at `dtype`."""
    if route == "matmul_integer":
        return integer_product_seconds(n, repeats)
    if route == "qlinear_conv3x3":
        return integer_conv_seconds(n, repeats)
    kind = torch_dtype(dtype)
    if route == "conv3x3":
        channels, side = conv3x3_shape(n)
        image = torch.randn(1, channels, side, side, device=device).to(kind)
        image = image.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, channels, 3, 3, device=device).to(kind)
        return best_seconds(lambda: F.conv2d(image, weight, padding=1), device, repeats)
    a, b = torch.randn(n, n, device=device).to(kind), torch.randn(n, n, device=device).to(kind)
    if route == "matmul":
        return best_seconds(lambda: a @ b, device, repeats)
    pixels = a.view(1, 64, n // 64, n).permute(0, 3, 1, 2)  # the rows of `a` as an NHWC image with n channels
    return best_seconds(lambda: F.conv2d(pixels, b.view(n, n, 1, 1)), device, repeats)


def integer_product_seconds(n: int, repeats: int) -> float:
    """The best time of an n x n uint8 by n x n int8 product into int32 on onnxruntime."""
    onnx = require("onnx")  # a one-line error where the optional package is missing, not an ImportError
    TensorProto, helper = onnx.TensorProto, onnx.helper

    rng = np.random.default_rng(SEED)
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    weights = {"b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    return onnxruntime_seconds(node, ("a", TensorProto.UINT8, [n, n]), ("y", TensorProto.INT32), weights,
                               rng.integers(0, 256, (n, n), dtype=np.uint8), repeats)


def integer_conv_seconds(n: int, repeats: int) -> float:
    """The best time of the 3x3 convolution of size n as onnxruntime's QLinearConv, uint8 by int8 weights."""
    onnx = require("onnx")
    TensorProto, helper = onnx.TensorProto, onnx.helper

    channels, side = conv3x3_shape(n)
    rng = np.random.default_rng(SEED)
    inputs = ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero"]
    node = helper.make_node("QLinearConv", inputs, ["y"], pads=[1, 1, 1, 1])
    weights = {"x_scale": np.array(0.02, np.float32), "x_zero": np.array(128, np.uint8),
               "w": rng.integers(-127, 128, (channels, channels, 3, 3), dtype=np.int8),
               "w_scale": np.array(0.01, np.float32), "w_zero": np.array(0, np.int8),
               "y_scale": np.array(0.5, np.float32), "y_zero": np.array(128, np.uint8)}
    shape = [1, channels, side, side]
    return onnxruntime_seconds(node, ("x", TensorProto.UINT8, shape), ("y", TensorProto.UINT8), weights,
                               rng.integers(0, 256, shape, dtype=np.uint8), repeats)


def onnxruntime_seconds(node, source: tuple, target: tuple, weights: dict, feed: np.ndarray, repeats: int) -> float:
    """The best time of a one-node graph on onnxruntime with torch's thread count, as the runtimes' rows use:
    `source` (name, element type, shape) is fed `feed`; `weights` are the node's constant inputs."""
    require("onnx")
    ort = require("onnxruntime")
    from onnx import helper, numpy_helper

    graph = helper.make_graph([node], "ceiling", [helper.make_tensor_value_info(*source)],
                              [helper.make_tensor_value_info(*target, None)],
                              [numpy_helper.from_array(value, name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return best_seconds(lambda: session.run(None, {source[0]: feed}), torch.device("cpu"), repeats)


def best_seconds(call, device: torch.device, repeats: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best
