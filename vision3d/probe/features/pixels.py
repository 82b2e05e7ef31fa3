"""``iuvrgb``: the raw-pixel baseline of Feat2GS (view index, pixel coordinates, colour)."""

from __future__ import annotations

import torch

from . import FeatureExtractor, register_extractor


class IUVRGB(FeatureExtractor):
    """One map ``[6, H, W]``: view index, u / W, v / H (in [0, 1]) and RGB."""

    cacheable = False

    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:
        H, W, _ = image.shape
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
        i = torch.full((H, W), float(index))
        return [torch.cat([torch.stack([i, (u + 0.5) / W, (v + 0.5) / H]), image.permute(2, 0, 1).float()])]


@register_extractor("iuvrgb")
def _make(spec: str) -> FeatureExtractor:
    return IUVRGB()
