"""Geometry regularisers of the sparse-voxel fit (GeoSVR / PGSR style), each a plain function of one
rendered view so the fitting loop switches them on by weight (docs/ARCHITECTURE.md, "surface/")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.depth import depth_to_normals


def depth_normals(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Unit normals [H, W, 3] (camera frame) of the surface a depth map [H, W] (camera z) describes,
    from the cross product of its back-projected points' image-space gradients (kornia)."""
    n = depth_to_normals(depth[None, None], K[None].to(depth))  # [1, 3, H, W]
    return n[0].permute(1, 2, 0)


def normal_depth_loss(depth: torch.Tensor, normal: torch.Tensor, alpha: torch.Tensor, K: torch.Tensor,
                      world_to_cam: torch.Tensor, min_alpha: float = 0.5) -> torch.Tensor:
    """Mean ``1 - |cos|`` between the rendered normal and the normal of the rendered depth, over pixels
    whose 3x3 neighbourhood is all surface (``alpha > min_alpha``; depth differences across a silhouette
    say nothing about the surface).

    The rendered normal comes from the density gradient, the depth normal from where the weight sits
    along each ray: asking them to agree makes the weight peak on a surface instead of spreading
    through fog, which photometric loss from 2-4 photos does not ask for. The sign is ignored because
    a composited gradient normal can face either way inside a thin shell.

    Args:
        depth: [H, W] rendered camera z; normal: [H, W, 3] rendered world-frame normal (not unit);
        alpha: [H, W]; K: [3, 3] intrinsics of this resolution; world_to_cam: [4, 4].
    Returns:
        scalar tensor (0 when no pixel qualifies).
    """
    surf = (alpha > min_alpha).float()
    inner = -F.max_pool2d(-surf[None, None], 3, stride=1, padding=1)[0, 0] > 0.5
    if not bool(inner.any()):
        return depth.sum() * 0.0
    n_cam = F.normalize(normal @ world_to_cam[:3, :3].to(normal).T, dim=-1)
    cos = (n_cam * depth_normals(depth, K)).sum(-1).abs()
    return (1 - cos)[inner].mean()
