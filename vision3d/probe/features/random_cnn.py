"""``random_cnn``: a seeded, randomly initialised conv net (Feat2GS' "no training" control).

``random_cnn`` uses seed 0; ``random_cnn:<seed>`` another. Three stages (1, 1/2, 1/4
resolution), 32 / 64 / 128 channels, Kaiming-uniform init (PyTorch's default).
"""

from __future__ import annotations

import torch
from torch import nn

from vision3d.errors import UserError

from . import FeatureExtractor, register_extractor


class RandomCNN(FeatureExtractor):
    def __init__(self, seed: int = 0):
        g = torch.random.fork_rng(devices=[])  # leave the caller's RNG as it was
        with g:
            torch.manual_seed(seed)
            self.stages = nn.ModuleList([
                nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU()),
            ]).eval()

    @torch.no_grad()
    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:
        x = image.permute(2, 0, 1)[None].float() * 2 - 1
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x[0])
        return out


@register_extractor("random_cnn")
def _make(spec: str) -> FeatureExtractor:
    _, _, seed = spec.partition(":")
    try:
        return RandomCNN(int(seed) if seed else 0)
    except ValueError:
        raise UserError(f"probe backbone {spec!r}: the seed after 'random_cnn:' must be an integer") from None
