"""The optimizer, its learning-rate schedule and one optimizer step: shared by the trainer and `zoo bench`, which
times the same step."""

from __future__ import annotations

import math

import torch

from zoo.core.errors import ZooError


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 10% then cosine decay to 1% of the base learning rate."""
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(net, recipe):
    """Two parameter groups, the backbone's (at `recipe.backbone_lr`) and the rest (at `recipe.lr`)."""
    backbone = list(net.backbone_parameters())
    in_backbone = {id(p) for p in backbone}
    rest = [p for p in net.parameters() if id(p) not in in_backbone]
    groups = [dict(params=backbone, lr=recipe.backbone_lr, base_lr=recipe.backbone_lr, name="backbone"),
              dict(params=rest, lr=recipe.lr, base_lr=recipe.lr, name="head")]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    raise ZooError(f"unknown optimizer {recipe.optimizer!r}; choose adam, adamw or sgd")


def set_learning_rates(optimizer, factor: float, backbone_frozen: bool) -> None:
    """Each group at its base rate times the schedule's `factor`; the backbone's at 0 while it is frozen."""
    for group in optimizer.param_groups:
        group["lr"] = 0.0 if (backbone_frozen and group["name"] == "backbone") else group["base_lr"] * factor


def optimizer_step(loss: torch.Tensor, net: torch.nn.Module, optimizer, scaler: torch.amp.GradScaler,
                   grad_clip: float) -> None:
    """Backward and one optimizer step: scaled (fp16), gradients clipped to `grad_clip` once unscaled (0: no
    clipping). `zoo bench` times this same step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
