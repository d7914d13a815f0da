"""The crops a run trains on and the loader that deals them out to the ranks."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from zoo.core import distributed as zdist
from zoo.data.collate import collate
from zoo.data.dataset import PointDataset, Splits
from zoo.models.registry import Recipe


def training_crops(splits: Splits, stride: int, recipe: Recipe, seed: int, crops_per_image: int,
                   encoder=None) -> PointDataset:
    """The training images as the recipe augments them, `crops_per_image` crops each."""
    return PointDataset(splits.train, f"{splits.name}:train", stride=stride, train=True, encoder=encoder,
                        crop_size=recipe.crop_size, crops_per_image=crops_per_image, scale_range=recipe.scale_range,
                        flip=recipe.flip, rotate=recipe.rotate, jitter=recipe.color_jitter,
                        head_crops=recipe.head_crops, seed=seed)


def training_loader(crops: PointDataset, per_rank: int, seed: int, workers: int) -> DataLoader:
    """This rank's share of each epoch's crops, shuffled from (seed, epoch): `per_rank` crops a batch."""
    world = zdist.world_size()
    sampler = DistributedSampler(crops, num_replicas=world, rank=zdist.rank(), shuffle=True, seed=seed,
                                 drop_last=len(crops) >= world)
    return DataLoader(crops, batch_size=per_rank, sampler=sampler, collate_fn=collate, num_workers=workers,
                      drop_last=len(sampler) >= per_rank, persistent_workers=workers > 0)
