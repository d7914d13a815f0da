"""What a family's converter of published checkpoints returns, and the helpers its key mappings share.

Each family module may define `from_published(weights) -> Converted | None`: given a bare state dict (wrappers
and `module.`-style prefixes already removed by `zoo.models.weights.convert`), it returns the zoo state dict and the
options the layout implies, None when the keys show nothing of its published layouts, or raises a `ZooError` naming the
keys it cannot place when they are only partly its own. `PUBLISHED_KEYS` (a few keys of its layouts) goes into
the error shown when no family recognizes a file. `implied_options(state, name) -> dict` gives the constructor
options a zoo state dict fixes by its keys where registered model `name` would differ (e.g. batch norm), so a
checkpoint always rebuilds the architecture its weights were saved from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from zoo.core.errors import ZooError


@dataclass
class Converted:
    """A published state dict turned into a zoo one."""

    state: dict[str, Tensor]  # zoo key -> tensor
    options: dict  # constructor options the layout implies (e.g. batch_norm=False)
    layout: str  # which published layout was recognized, for provenance and messages
    preprocessing: str  # the input normalization and resizing the published code used, and what the zoo does
    origin: dict[str, str] = field(default_factory=dict)  # zoo key -> published key, for shape-mismatch messages


#: A rule: regular expression over published keys -> a function of its match giving the zoo key, or None to
#: drop the key (a layer the published forward pass never runs).
Rule = tuple[str, Callable[[re.Match], str | None]]


def rename(weights: dict[str, Tensor], rules: list[Rule], layout: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Apply the first matching rule to every key. Keys no rule matches are an error naming the first few."""
    state, origin, unmatched = {}, {}, []
    for key, value in weights.items():
        for pattern, target in rules:
            found = re.fullmatch(pattern, key)
            if found:
                new = target(found)
                if new is not None:
                    state[new], origin[new] = value, key
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ZooError(f"{layout} layout with {len(unmatched)} key(s) it does not have: {', '.join(unmatched[:3])}"
                       f"; expected keys like {', '.join(p for p, _ in rules[:3])}")
    return state, origin


def has_prefix(weights: dict, *prefixes: str) -> bool:
    """True when every prefix starts at least one key."""
    return all(any(k.startswith(p) for k in weights) for p in prefixes)
