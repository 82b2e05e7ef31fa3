"""Seeded orders in which optimisers visit their training views."""

from __future__ import annotations

from typing import Iterator

import torch


def epoch_views(n: int, gen: torch.Generator) -> Iterator[int]:
    """Endless view indices in ``range(n)``: every view once per epoch, each epoch in a fresh random order
    drawn from ``gen`` when it starts (3DGS's viewpoint stack).

    Over a run each view is visited equally often; with independent draws, which views the last
    steps happened to pick changes the result from seed to seed.
    """
    while True:
        yield from reversed(torch.randperm(n, generator=gen).tolist())
