"""Inference graph preparation: batch norm folded into the convolution that feeds it.

In eval mode a batch norm is a per-channel affine map, so a convolution whose output goes to that batch norm and
nowhere else can absorb it (scaled weights, shifted bias): one pass over the activations instead of two, and no
separate normalization under autocast. Which convolution feeds which batch norm is observed on one forward pass
of a small input, never guessed from module names, so any family folds the same way; a convolution whose output
is also used elsewhere (a residual branch, a resize before the norm) is left as it is.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves


class _Uses(TorchFunctionMode):
    """Counts, per tensor, the calls that read its values (metadata reads such as `.shape` return no tensor and
    are not counted), except calls made inside a batch norm's own forward."""

    def __init__(self):
        super().__init__()
        self.uses: Counter[int] = Counter()
        self.inside_norm = 0
        self.alive: list[Tensor] = []  # keeps every seen tensor alive, so that no id is reused during the pass

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not self.inside_norm and any(isinstance(r, Tensor) for r in tree_leaves(result)):
            for value in tree_leaves((args, kwargs)):
                if isinstance(value, Tensor):
                    self.uses[id(value)] += 1
                    self.alive.append(value)
        return result


def foldable_pairs(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """(conv name, batch norm name) pairs where, on a forward pass of `example`, every output of the convolution
    went to that batch norm only and the batch norm read nothing else."""
    modules = dict(model.named_modules())
    produced: dict[int, str] = {}  # id of a conv output -> the conv
    calls: Counter[str] = Counter()  # conv -> forward calls
    feeds: dict[str, set[str | None]] = defaultdict(set)  # batch norm -> the convs (None: something else) it read
    fed: Counter[str] = Counter()  # conv -> outputs read by a batch norm
    mode = _Uses()
    handles = []

    def conv_hook(name):
        def hook(_module, _inputs, output):
            calls[name] += 1
            produced[id(output)] = name
            mode.alive.append(output)
        return hook

    def norm_pre_hook(name):
        def hook(_module, inputs):
            source = produced.get(id(inputs[0]))
            feeds[name].add(source)
            if source is not None:
                fed[source] += 1
            mode.inside_norm += 1
        return hook

    def norm_hook(_module, _inputs, _output):
        mode.inside_norm -= 1

    for name, module in modules.items():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(norm_pre_hook(name)))
            handles.append(module.register_forward_hook(norm_hook))
    try:
        with torch.no_grad(), mode:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    pairs = []
    for norm, sources in feeds.items():
        if len(sources) != 1 or None in sources:
            continue
        (conv,) = sources
        outputs = [t for t, c in produced.items() if c == conv]
        if fed[conv] == calls[conv] and not any(mode.uses[t] for t in outputs) and _fits(modules[conv], modules[norm]):
            pairs.append((conv, norm))
    return pairs


def _fits(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> bool:
    return (norm.track_running_stats and norm.running_mean is not None and not norm.training
            and conv.out_channels == norm.num_features)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def fold_batch_norm(model: nn.Module, example: Tensor) -> int:
    """Fold every foldable batch norm of `model` (in eval mode) into its convolution, in place; the batch norm
    becomes an identity. Returns how many were folded."""
    if model.training:
        raise ValueError("fold_batch_norm: the model must be in eval mode (folding uses the running statistics)")
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return 0
    pairs = foldable_pairs(model, example)
    for conv, norm in pairs:
        _replace(model, conv, fuse_conv_bn_eval(model.get_submodule(conv), model.get_submodule(norm)))
        _replace(model, norm, nn.Identity())
    return len(pairs)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """`model` in eval mode with its batch norms folded (in place): what eval, predict, bench and export run.
    The probe input is 64 px or two strides square, which every family accepts."""
    model.eval()
    parameter = next(model.parameters(), None)
    side = max(64, 2 * getattr(model, "stride", 32))
    device = parameter.device if parameter is not None else "cpu"
    fold_batch_norm(model, torch.zeros(1, 3, side, side, device=device))
    return model
