"""Per-pixel probe features: multi-scale maps upsampled to pixel resolution, sampled at the
Gaussians' pixels, PCA-reduced jointly over the views (Feat2GS: PCA to 256-d)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import get_extractor
from .cache import cached_maps


@dataclass
class PixelFeatures:
    """Attributes:
        features: [N, D] float32, zero-mean, unit overall std (PCA components).
        n_cached: how many of the views' maps came from the cache.
        raw_dim: channels before PCA (all scales together).
    """

    features: torch.Tensor
    n_cached: int
    raw_dim: int


def sample_maps(maps: list[torch.Tensor], uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear samples of every map at pixel centres ``uv`` [P, 2] (pixels of the
    ``width`` x ``height`` photo) -> [P, sum C_s]; each scale's vectors L2-normalised
    (no scale outweighs another by its magnitude). Equals upsampling each map to pixel
    resolution (align_corners=False) and reading the pixels."""
    grid = torch.stack([(uv[:, 0] + 0.5) / width * 2 - 1, (uv[:, 1] + 0.5) / height * 2 - 1], -1)
    out = []
    for m in maps:
        s = F.grid_sample(m[None].float(), grid[None, None], mode="bilinear", align_corners=False,
                          padding_mode="border")[0, :, 0].T
        out.append(s / (s.norm(dim=1, keepdim=True) + 1e-6))
    return torch.cat(out, 1)


def pca_reduce(x: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """[N, C] -> [N, min(dim, C, N)] principal components (centred; scaled to unit overall std)."""
    x = x - x.mean(0, keepdim=True)
    k = min(dim, x.shape[1], x.shape[0])
    if k < x.shape[1]:
        g = torch.random.fork_rng(devices=[])
        with g:
            torch.manual_seed(seed)
            _, _, V = torch.pca_lowrank(x, q=k, center=False, niter=4)
        x = x @ V[:, :k]
    return x / x.std().clamp_min(1e-6)


def pixel_features(backbone: str, images: torch.Tensor, pixels: list[torch.Tensor], dim: int = 256,
                   cache_dir: Path | None = None) -> PixelFeatures:
    """Features of the Gaussians' pixels.

    Args:
        backbone: extractor spec (:func:`vision3d.probe.features.get_extractor`).
        images: [V, H, W, 3] float32 photos in [0, 1].
        pixels: per view, [P_v, 2] float pixel coordinates (u, v) of its Gaussians.
        dim: PCA dimension (Feat2GS: 256).
        cache_dir: feature-map cache root, or None for no cache.
    Returns:
        :class:`PixelFeatures` with ``features`` [sum P_v, D], views in order.
    """
    ex = get_extractor(backbone)
    V, H, W, _ = images.shape
    rows, n_cached = [], 0
    for v in range(V):
        maps, hit = cached_maps(ex, images[v], v, cache_dir)
        n_cached += int(hit)
        rows.append(sample_maps(maps, pixels[v].float(), W, H))
    raw = torch.cat(rows)
    return PixelFeatures(pca_reduce(raw, dim), n_cached, raw.shape[1])
