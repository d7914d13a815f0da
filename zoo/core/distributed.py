"""The few torch.distributed helpers the zoo needs; every one is a no-op in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def mean_count_over_ranks(count: float, device: torch.device | str = "cpu") -> float:
    """Average of `count` over ranks, at least 1.

    Losses normalized by the number of true points use this so that, once DDP averages gradients over
    ranks, every rank weighs a point the same as a single process holding the whole batch would.
    """
    value = torch.tensor(float(count), device=device)
    if is_distributed():
        dist.all_reduce(value)
        value /= world_size()
    return max(float(value), 1.0)


def from_main(value):
    """Rank 0's `value` on every rank (a picklable object, e.g. a path rank 0 chose)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
