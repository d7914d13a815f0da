"""State dicts in the published key layouts (names and shapes read from the published code, values random) and
independent forward passes of the published networks over them, written with torch.nn.functional only.

Nothing here uses the zoo's networks or converters: the tests compare the zoo against these.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg_layers(batch_norm: bool, blocks: int) -> list[tuple[int, str, int, int]]:
    """(torchvision features index, kind, in channels, out channels) of VGG-16's first `blocks` blocks, each
    block ending in its pool; kinds are conv, bn, relu, pool."""
    layers, index, channels, seen = [], 0, 3, 0
    for v in VGG16:
        if v == "M":
            seen += 1
            layers.append((index, "pool", channels, channels))
            index += 1
            if seen == blocks:
                break
            continue
        kinds = ("conv", "bn", "relu") if batch_norm else ("conv", "relu")
        for kind in kinds:
            layers.append((index, kind, channels if kind == "conv" else v, v))
            index += 1
        channels = v
    return layers


def random_conv(state: dict, key: str, c_in: int, c_out: int, kernel: int, gen: torch.Generator) -> None:
    # He-scaled weights keep activations of order 1 through the whole random network.
    state[f"{key}.weight"] = torch.randn(c_out, c_in, kernel, kernel, generator=gen) * math.sqrt(2 / (c_in * kernel**2))
    state[f"{key}.bias"] = torch.randn(c_out, generator=gen) * 0.1


def random_bn(state: dict, key: str, c: int, gen: torch.Generator) -> None:
    state[f"{key}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
    state[f"{key}.bias"] = 0.1 * torch.randn(c, generator=gen)
    state[f"{key}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
    state[f"{key}.running_var"] = 0.5 + torch.rand(c, generator=gen)
    state[f"{key}.num_batches_tracked"] = torch.tensor(1000)


def run_layers(x: torch.Tensor, state: dict, layers, key, dilation: int = 1) -> torch.Tensor:
    for index, kind, _, _ in layers:
        k = key(index)
        if kind == "conv":
            x = F.conv2d(x, state[f"{k}.weight"], state[f"{k}.bias"], padding=dilation, dilation=dilation)
        elif kind == "bn":
            x = F.batch_norm(x, state[f"{k}.running_mean"], state[f"{k}.running_var"], state[f"{k}.weight"],
                             state[f"{k}.bias"], training=False, eps=1e-5)
        elif kind == "relu":
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2, 2)
    return x


# ---- official P2PNet ------------------------------------------------------------------------------------------

#: where each backbone.bodyN slice starts and ends in torchvision's features (models/backbone.py)
P2PNET_BODIES = {True: ((0, 13), (13, 23), (23, 33), (33, 43)), False: ((0, 9), (9, 16), (16, 23), (23, 30))}


def p2pnet_body_layers(batch_norm: bool) -> list[list]:
    layers = vgg_layers(batch_norm, blocks=5)
    return [[layer for layer in layers if start <= layer[0] < end] for start, end in P2PNET_BODIES[batch_norm]]


def p2pnet_state(batch_norm: bool = True, anchors: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """`model.state_dict()` of the official P2PNet (row = line = 2 by default), random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for n, (body, (start, _)) in enumerate(zip(p2pnet_body_layers(batch_norm), P2PNET_BODIES[batch_norm],
                                               strict=True), 1):
        for index, kind, c_in, c_out in body:
            key = f"backbone.body{n}.{index - start}"
            if kind == "conv":
                random_conv(state, key, c_in, c_out, 3, gen)
            elif kind == "bn":
                random_bn(state, key, c_out, gen)
    for name, c_in, kernel in (("P5_1", 512, 1), ("P5_2", 256, 3), ("P4_1", 512, 1), ("P4_2", 256, 3),
                               ("P3_1", 256, 1), ("P3_2", 256, 3)):
        random_conv(state, f"fpn.{name}", c_in, 256, kernel, gen)
    for head, outputs in (("regression", 2 * anchors), ("classification", 2 * anchors)):
        for conv in ("conv1", "conv2", "conv3", "conv4"):
            random_conv(state, f"{head}.{conv}", 256, 256, 3, gen)
        random_conv(state, f"{head}.output", 256, outputs, 3, gen)
    return state


def published_anchors(height: int, width: int, row: int = 2, line: int = 2, stride: int = 8) -> torch.Tensor:
    """(K * A, 2) anchor points as the official code lays them out: cells row-major, then the cell's anchors."""
    shift_x = (np.arange(1, line + 1) - 0.5) * stride / line - stride / 2
    shift_y = (np.arange(1, row + 1) - 0.5) * stride / row - stride / 2
    ax, ay = np.meshgrid(shift_x, shift_y)
    cell = np.stack([ax.ravel(), ay.ravel()], 1)  # (A, 2)
    cx, cy = np.meshgrid((np.arange((width + stride - 1) // stride) + 0.5) * stride,
                         (np.arange((height + stride - 1) // stride) + 0.5) * stride)
    centres = np.stack([cx.ravel(), cy.ravel()], 1)  # (K, 2)
    return torch.from_numpy((centres[:, None, :] + cell[None]).reshape(-1, 2).astype(np.float32))


def published_p2pnet(state: dict, images: torch.Tensor, batch_norm: bool = True) -> dict[str, torch.Tensor]:
    """pred_points (B, K * A, 2) and the person probability softmax(pred_logits)[..., 1] (B, K * A)."""
    features, x = [], images
    for n, (body, (start, _)) in enumerate(zip(p2pnet_body_layers(batch_norm), P2PNET_BODIES[batch_norm],
                                               strict=True), 1):
        x = run_layers(x, state, body, lambda i, n=n, start=start: f"backbone.body{n}.{i - start}")
        features.append(x)
    c4, c5 = features[2], features[3]

    def conv(t, key, padding):
        return F.conv2d(t, state[f"{key}.weight"], state[f"{key}.bias"], padding=padding)

    p4 = conv(conv(c4, "fpn.P4_1", 0) + F.interpolate(conv(c5, "fpn.P5_1", 0), scale_factor=2, mode="nearest"),
              "fpn.P4_2", 1)

    def head(name):
        t = F.relu(conv(F.relu(conv(p4, f"{name}.conv1", 1)), f"{name}.conv2", 1))
        return conv(t, f"{name}.output", 1).permute(0, 2, 3, 1).reshape(len(images), -1, 2)

    anchors = published_anchors(*images.shape[-2:])
    return {"points": head("regression") * 100 + anchors, "probability": head("classification").softmax(-1)[..., 1],
            "anchors": anchors}


# ---- CSRNet-pytorch -------------------------------------------------------------------------------------------

CSRNET_BACKEND = (512, 512, 512, 256, 128, 64)


def csrnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """`model.state_dict()` of CSRNet-pytorch's CSRNet (frontend, backend, output_layer), random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for index, kind, c_in, c_out in vgg_layers(False, blocks=4)[:-1]:  # up to conv4_3's ReLU, no 4th pool
        if kind == "conv":
            random_conv(state, f"frontend.{index}", c_in, c_out, 3, gen)
    channels = 512
    for n, out in enumerate(CSRNET_BACKEND):
        random_conv(state, f"backend.{2 * n}", channels, out, 3, gen)
        channels = out
    random_conv(state, "output_layer", 64, 1, 1, gen)
    return state


def published_csrnet(state: dict, images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H/8, W/8) density of CSRNet-pytorch's forward pass."""
    x = run_layers(images, state, vgg_layers(False, blocks=4)[:-1], lambda i: f"frontend.{i}")
    backend = [(2 * n + k, kind, 0, 0) for n in range(len(CSRNET_BACKEND)) for k, kind in enumerate(("conv", "relu"))]
    x = run_layers(x, state, backend, lambda i: f"backend.{i}", dilation=2)
    return F.conv2d(x, state["output_layer.weight"], state["output_layer.bias"])
