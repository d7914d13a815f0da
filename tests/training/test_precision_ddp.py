"""Real families under DDP and mixed precision.

DDP: two gloo ranks on CPU, each with half of a batch whose images hold very different head counts, must give
the gradients of one process holding the whole batch. P2PNet's localization loss divides by the number of heads
averaged over ranks (zoo.core.distributed.mean_count_over_ranks); DDP then averages gradients, so a summed count
would halve that term and a per-rank count would weigh the heads of the sparse rank more.

Mixed precision: the seeded families give the same points and counts under bf16 autocast as in float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support import blob_samples
from support.seeded import seeded_csrnet, seeded_p2pnet, threshold_in_widest_gap
from torch.nn.parallel import DistributedDataParallel

from zoo.core import distributed as zdist
from zoo.core.precision import autocast
from zoo.data.collate import collate
from zoo.metrics.counting import match_points
from zoo.models.factory import create_model

# Per image of the global batch: head counts. Rank 0 takes the first two images, rank 1 the last two.
HEADS = [(1, 1), (2, 2), (9, 9), (12, 12)]
P2PNET_OPTIONS = dict(backbone="vgg16", width=16, loc_weight=1.0)  # no BatchNorm: ranks' statistics would differ


def ddp_batch(images: slice):
    samples = [blob_samples(1, (32, 32), heads, seed=s)[0] for s, heads in enumerate(HEADS)]
    return collate(samples[images])


def p2pnet_gradients(batch) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = create_model("p2pnet", **P2PNET_OPTIONS)
    with torch.no_grad():  # proposals off their anchors, so matching and localization are not trivial
        net.regression[-1].weight.normal_(0, 1e-3)
    model = DistributedDataParallel(net) if dist.is_initialized() else net
    loss, _ = net.loss(model(batch.images), batch)
    loss.backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def ddp_rank(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        per_rank = len(HEADS) // world
        grads = p2pnet_gradients(ddp_batch(slice(rank * per_rank, (rank + 1) * per_rank)))
        torch.save(grads, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes importing torch: 45 s on this loaded 2-core machine
def test_two_rank_p2pnet_step_gives_the_single_process_gradients(tmp_path):
    assert sum(h for h, _ in HEADS[:2]) != sum(h for h, _ in HEADS[2:])  # unequal head counts per rank
    mp.spawn(ddp_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = p2pnet_gradients(ddp_batch(slice(None)))
    for rank in range(2):
        ranked = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert ranked.keys() == single.keys()
        for name, grad in single.items():
            torch.testing.assert_close(ranked[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # The localization term matters here: the last regression layer gets gradient from it alone.
    assert single["regression.4.weight"].abs().max() > 1e-3


def emulated_rank_gradients(monkeypatch, rank: int, counts: list[int]) -> dict[str, torch.Tensor]:
    """Rank `rank`'s gradients in this process, its all-reduce answered with every rank's head count."""
    monkeypatch.setattr(zdist, "is_distributed", lambda: True)
    monkeypatch.setattr(zdist, "world_size", lambda: len(counts))
    monkeypatch.setattr(zdist.dist, "all_reduce", lambda value, *a, **k: value.fill_(float(sum(counts))))
    try:
        per_rank = len(HEADS) // len(counts)
        return p2pnet_gradients(ddp_batch(slice(rank * per_rank, (rank + 1) * per_rank)))
    finally:
        monkeypatch.undo()


def test_rank_gradients_averaged_as_ddp_does_give_the_single_process_gradients(monkeypatch):
    """The cheap variant of the 2-rank test: DDP's gradient is the mean of the ranks' gradients, and each rank's
    loss sees the other's head count only through the all-reduce, emulated here."""
    counts = [sum(h for h, _ in HEADS[:2]), sum(h for h, _ in HEADS[2:])]
    ranked = [emulated_rank_gradients(monkeypatch, rank, counts) for rank in range(2)]
    single = p2pnet_gradients(ddp_batch(slice(None)))
    for name, grad in single.items():
        torch.testing.assert_close((ranked[0][name] + ranked[1][name]) / 2, grad, rtol=1e-4, atol=1e-7, msg=name)


# ---- mixed precision -------------------------------------------------------------------------------------------



FAMILIES = {"p2pnet": seeded_p2pnet, "csrnet": seeded_csrnet, "cpn_r18": lambda: create_model("cpn_r18")}
# How far a bf16 point may sit from its float32 twin. CPN moves each peak a quarter cell toward its higher
# neighbour; where the two neighbours nearly tie (common in an untrained flat map), bf16 rounding can pick the
# other side: half a stride-4 cell, 2 px (seen on CI's CPU). Any other cell would be 4 px or more away.
POINT_TOLERANCE = {"p2pnet": 0.5, "csrnet": 0.5, "cpn_r18": 2.0}



@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16_autocast_finds_the_float32_points_and_counts(name):
    torch.manual_seed(0)
    net = FAMILIES[name]().eval()
    batch = collate(blob_samples(1, (48, 64), (8, 8), seed=7))  # one image: one threshold fits it
    with torch.no_grad():
        full = net(batch.images)
        with autocast("cpu", "bf16"):
            mixed = net(batch.images)
    threshold = threshold_in_widest_gap(net.decode(full, batch.sizes, -1e9)[0].scores)
    (exact,), (approx,) = net.decode(full, batch.sizes, threshold), net.decode(mixed, batch.sizes, threshold)
    assert len(exact.points) > 0
    assert abs(approx.count - exact.count) <= 0.01 * abs(exact.count)
    assert len(approx.points) == len(exact.points)
    assert match_points(approx.points, exact.points, POINT_TOLERANCE[name]) == len(exact.points)
